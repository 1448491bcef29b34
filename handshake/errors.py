"""Errors the CLI turns into one clear line (no traceback)."""


class HandshakeError(Exception):
    """An error with a message meant for a person; the CLI prints it and exits 1."""
