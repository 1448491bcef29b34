# One image for the three Handshake services (ingest, aggregator, api).
#
#   docker build -t handshake:0.1.0 .
#   docker run --rm -p 8000:8000 -e HANDSHAKE_KAFKA_BOOTSTRAP=kafka:9092 handshake:0.1.0            # api
#   docker run --rm -p 8001:8001 -e HANDSHAKE_KAFKA_BOOTSTRAP=kafka:9092 handshake:0.1.0 serve ingest
#   docker run --rm handshake:0.1.0 kafka topics                                                   # declare topics
#
# Configuration is by HANDSHAKE_* environment variables only (see deploy/README.md).
# No HEALTHCHECK: compose and Kubernetes probe /readyz and /healthz themselves.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/handshake
ENV PATH=/opt/handshake/bin:$PATH

# Dependencies first, from pyproject.toml alone, so source edits do not reinstall them:
# install the project with empty packages, then drop the project itself (keeps its dependencies).
COPY pyproject.toml README.md ./
RUN mkdir -p handshake schemas services \
 && touch handshake/__init__.py schemas/__init__.py services/__init__.py \
 && pip install --upgrade pip \
 && pip install . \
 && pip uninstall -y handshake \
 && rm -rf handshake schemas services build *.egg-info

# Then the project itself (a regular, non-editable install: the image needs no /src).
COPY handshake ./handshake
COPY schemas ./schemas
COPY services ./services
RUN pip install --no-deps . \
 && handshake --help >/dev/null

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="handshake" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="Handshake services: handshake serve ingest|aggregator|api"

RUN groupadd --system --gid 10001 handshake \
 && useradd --system --uid 10001 --gid handshake --home-dir /home/handshake --create-home \
      --shell /usr/sbin/nologin handshake \
 && mkdir -p /var/lib/handshake \
 && chown handshake:handshake /var/lib/handshake

COPY --from=build /opt/handshake /opt/handshake

ENV PATH=/opt/handshake/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HANDSHAKE_HOST=0.0.0.0

WORKDIR /var/lib/handshake
USER 10001:10001

# api, ingest, aggregator (health/metrics web server)
EXPOSE 8000 8001 8002

ENTRYPOINT ["handshake"]
CMD ["serve", "api"]
