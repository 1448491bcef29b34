"""Entry point: ``handshake serve aggregator`` runs one faust worker."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from handshake.logs import setup_logging
from handshake.topics import ensure_or_fail
from schemas.topics import TopicSpec
from services.aggregator.settings import AggregatorSettings

log = logging.getLogger("services.aggregator")

UNCLEAN_MARKER = "worker.running"


def topic_specs(settings: AggregatorSettings) -> list[TopicSpec]:
    """The four declared topics plus the internal compacted partials topic."""
    partials = TopicSpec(
        name=settings.partials_topic,
        partitions=settings.topic_partitions,
        config={"cleanup.policy": "compact"},
        key="{AA}-{BB}",
        description="internal: per-source-partition partial aggregates of each pair",
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
    return [*settings.topic_specs(), partials, *changelogs]


def prepare_data_dir(settings: AggregatorSettings) -> bool:
    """Create the data dir; wipe the local tables if the last run did not stop cleanly.

    After a crash the local RocksDB may hold writes whose changelog records were never sent;
    faust would then replay older changelog records over newer local values and mix two points
    in time. Rebuilding from the changelog restores a consistent prefix. Returns True on a wipe.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    marker = settings.data_dir / UNCLEAN_MARKER
    wiped = False
    tables = settings.data_dir / "faust"
    if marker.exists() and tables.exists():
        log.warning("previous run did not stop cleanly: rebuilding tables from the changelog")
        shutil.rmtree(tables)
        wiped = True
    marker.write_text("running\n")
    return wiped


def mark_clean(data_dir: Path) -> None:
    (data_dir / UNCLEAN_MARKER).unlink(missing_ok=True)


def serve(settings: AggregatorSettings | None = None) -> None:
    import faust

    from services.aggregator.app import create_app

    settings = settings or AggregatorSettings()
    setup_logging("aggregator", settings.log_level)
    ensure_or_fail(settings.kafka_bootstrap, topic_specs(settings), settings.replication_factor)
    prepare_data_dir(settings)
    agg = create_app(settings)
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
