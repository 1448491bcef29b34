"""`handshake partners add|list|revoke` (filled in by the ingest work)."""

import typer

app = typer.Typer(
    no_args_is_help=True, help="Partner API keys (stored only as hashes on handshake.partners.v1)."
)
