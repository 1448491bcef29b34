"""`handshake partners add|list|revoke`: partner API keys, stored only as hashes on the partners topic."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from services.ingest.settings import IngestSettings

app = typer.Typer(
    no_args_is_help=True, help="Partner API keys (stored only as hashes on handshake.partners.v1)."
)


_DATA_DIR: list[Path] = [Path(".handshake")]


@app.callback()
def _options(
    data_dir: Path = typer.Option(
        Path(".handshake"),
        help="a platform's (or a native broker's) data dir: when its broker is secured, the"
        " handshake-partners credential kept there is used (HANDSHAKE_KAFKA_* settings win)",
    ),
) -> None:
    _DATA_DIR[0] = data_dir


def _settings() -> IngestSettings:
    """From HANDSHAKE_* variables; on a secured local broker, as the handshake-partners principal."""
    settings = IngestSettings()
    if settings.secured:
        return settings
    from handshake.broker import Cluster

    data_dir = _DATA_DIR[0]
    for candidate in (data_dir, data_dir / "kafka"):
        if (candidate / "layout").exists():
            cluster = Cluster(candidate)
            if cluster.secure:
                on_cluster = settings.model_copy(update={"kafka_bootstrap": cluster.bootstrap})
                return cluster.secrets.login(on_cluster, "handshake-partners")
    return settings


@app.command("add")
def add(
    name: str = typer.Argument(..., help="the partner's display name"),
    rate: float | None = typer.Option(
        None,
        "--rate",
        min=0.001,
        help="allowed events per second (default: HANDSHAKE_DEFAULT_RATE_PER_SECOND)",
    ),
    partner_id: str | None = typer.Option(None, "--id", help="partner id (default: derived from the name)"),
) -> None:
    """Register a partner and print its API key once (it is stored only as a hash)."""
    from services.ingest.partners import create_partner

    settings = _settings()
    pid, key = create_partner(settings, name, rate or settings.default_rate_per_second, partner_id=partner_id)
    typer.echo(f"partner_id: {pid}")
    typer.echo(f"api_key:    {key}")
    typer.echo("Store this key now: it cannot be shown again.", err=True)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="one JSON object per line")) -> None:
    """List partners (never their keys)."""
    from services.ingest.partners import read_partners

    for p in read_partners(_settings()):
        row = {
            "partner_id": p.partner_id,
            "name": p.name,
            "rate_per_second": p.rate_per_second,
            "created_at": p.created_at.isoformat(),
            "revoked_at": p.revoked_at.isoformat() if p.revoked_at else None,
        }
        if as_json:
            typer.echo(json.dumps(row))
        else:
            state = f"revoked {row['revoked_at']}" if p.revoked_at else "active"
            typer.echo(f"{p.partner_id:30} {p.rate_per_second:>8g}/s  {state:32} {p.name}")


@app.command("revoke")
def revoke(partner_id: str = typer.Argument(..., help="the partner whose key to revoke")) -> None:
    """Revoke a partner's key; ingest refuses it within a second."""
    from services.ingest.partners import revoke_partner

    record = revoke_partner(_settings(), partner_id)
    typer.echo(
        f"revoked {record.partner_id} at {record.revoked_at.isoformat() if record.revoked_at else '?'}"
    )
