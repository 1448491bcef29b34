"""Entry point: ``handshake serve aggregator`` runs one faust worker."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from handshake.logs import setup_logging
from handshake.runtime import AGGREGATOR_GC_THRESHOLD, tune_gc
from handshake.topics import ensure_or_fail
from schemas.topics import TopicSpec
from services.aggregator import partials
from services.aggregator.settings import AggregatorSettings

log = logging.getLogger("services.aggregator")

UNCLEAN_MARKER = "worker.running"
LAYOUT_FILE = "tables.layout"
LAYOUT = "write-units-1"  # local store a changelog prefix of whole units (see prepare_data_dir)


def topic_specs(settings: AggregatorSettings) -> list[TopicSpec]:
    """The four declared topics plus the internal partials topic and the tables' changelogs."""
    bundles = TopicSpec(
        name=settings.partials_topic,
        partitions=settings.topic_partitions,
        config=dict(partials.TOPIC_CONFIG),
        key="b:{random} (a bundle of partials, partitioned by their pairs)",
        description="internal: bundles of per-source-partition partial aggregates of pairs, purged once taken",
    )
    changelogs = [
        TopicSpec(
            name=f"{settings.app_id}-{table}-changelog",
            partitions=settings.topic_partitions,
            config={"cleanup.policy": "compact"},
            key="table key",
            description=f"internal: changelog of the faust table {table!r}",
        )
        for table in ("state", "pairs")
    ]
    # declared before faust starts: faust checks the changelog's partition count against
    # metadata it fetched at start, and a changelog it creates itself is not in it yet
    return [*settings.topic_specs(), bundles, *changelogs]


def prepare_data_dir(settings: AggregatorSettings) -> bool:
    """Create the data dir; after an unclean stop, wipe local tables only if an old layout wrote them.

    The aggregator writes a batch's changelog records first and its local RocksDB changes only
    once the broker acknowledged them, in one atomic write with the changelog offset
    (:mod:`services.aggregator.store`): after a SIGKILL the local state is a prefix of the
    changelog and faust's recovery reads on from its offset. Tables written by releases before
    that (faust's per-key writes, local store possibly ahead of the changelog) are rebuilt from
    the changelog instead. Returns True on a wipe.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    marker = settings.data_dir / UNCLEAN_MARKER
    layout = settings.data_dir / LAYOUT_FILE
    tables = settings.data_dir / "faust"
    old_layout = not layout.exists() or layout.read_text().strip() != LAYOUT
    wiped = False
    if marker.exists() and tables.exists() and old_layout:
        log.warning("previous run did not stop cleanly with tables of an older layout: rebuilding them")
        shutil.rmtree(tables)
        wiped = True
    elif marker.exists():
        log.warning("previous run did not stop cleanly: resuming from local state and the changelog")
    layout.write_text(LAYOUT + "\n")
    marker.write_text("running\n")
    return wiped


def mark_clean(data_dir: Path) -> None:
    (data_dir / UNCLEAN_MARKER).unlink(missing_ok=True)


def restore_from_changelogs(settings: AggregatorSettings, agg: Any) -> None:
    """No local tables (a new or lost disk): fill them from the changelogs before faust starts."""
    from services.aggregator.restore import restore_tables
    from services.aggregator.store import TableState

    tables = [TableState(agg.app, agg.state), TableState(agg.app, agg.pairs)]
    done = restore_tables(
        settings.kafka_bootstrap, settings.aiokafka_config(), tables, settings.topic_partitions
    )
    agg.metrics.restored_records.set(done.records)
    log.info(
        "local tables restored from the changelogs",
        extra={
            "records": done.records,
            "seconds": round(done.seconds, 2),
            "per_second": round(done.per_second),
        },
    )


def serve(settings: AggregatorSettings | None = None) -> None:
    import faust

    from services.aggregator.app import create_app

    settings = settings or AggregatorSettings()
    setup_logging("aggregator", settings.log_level)
    partials.migrate_topic(settings.kafka_bootstrap, settings.partials_topic, settings.kafka_python_config())
    ensure_or_fail(
        settings.kafka_bootstrap,
        topic_specs(settings),
        settings.replication_factor,
        settings.kafka_python_config(),
    )
    had_tables = (settings.data_dir / "faust").exists()
    wiped = prepare_data_dir(settings)
    agg = create_app(settings)
    if (wiped or not had_tables) and settings.store.startswith("rocksdb"):
        restore_from_changelogs(settings, agg)
    tune_gc(AGGREGATOR_GC_THRESHOLD)  # stage 1 +39 %, measured (bench/README.md)
    worker = faust.Worker(
        agg.app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    clean = False
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        clean = exc.code in (0, None)
        raise
    finally:
        if clean:
            mark_clean(settings.data_dir)
