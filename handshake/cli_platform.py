"""`handshake up|down|push|demo-feed` (the whole platform; filled in by the platform work)."""

import typer


def register(app: typer.Typer) -> None:
    """Attach the platform commands to the main app."""
