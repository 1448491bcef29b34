"""Entry point: ``handshake serve ingest`` (configured by HANDSHAKE_* environment variables)."""

from __future__ import annotations

import uvicorn

from handshake.logs import setup_logging
from handshake.runtime import tune_gc
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings


def serve() -> None:
    """``handshake serve ingest``: read IngestSettings() from the environment and run."""
    run(IngestSettings())


def run(settings: IngestSettings) -> None:
    """Run ingest with uvicorn until interrupted; Kafka adapters start in the app's lifespan."""
    setup_logging("ingest", settings.log_level)
    app = create_app(settings)
    tune_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # no "server: uvicorn" header (it only tells scanners what to try), and no proxy-header
        # rewriting of the client address, which ingest never uses (partners are known by key);
        # both also cost time on every request (a header to validate, a middleware layer)
        server_header=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    serve()
