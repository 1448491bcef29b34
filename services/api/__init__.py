"""The api service: the live view of handshake.pair-stats.v1, REST, SSE and the dashboard."""
