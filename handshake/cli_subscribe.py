"""`handshake subscribe`: tail the API's live stream (filled in by the API work)."""


def subscribe() -> None:
    """Print the live stream of pair snapshots."""
    raise SystemExit("subscribe: not available yet")
