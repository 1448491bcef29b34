"""Handshake: shared plumbing (settings, logging, Kafka broker and admin) and the CLI."""

from pathlib import Path

__version__ = "0.1.0"

#: The repository root (the project is installed in editable mode by `make setup`).
ROOT = Path(__file__).resolve().parent.parent
