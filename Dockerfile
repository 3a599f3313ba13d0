# syntax=docker/dockerfile:1
# The hub's image: the Helm chart's default (helm/bus/values.yaml image.repository).
# Build: docker build -t ghcr.io/integration-bus/bus:0.1.0 .
# Two stages: wheels are built with the compilers of the full image, then only the installed
# packages are copied into a slim runtime that runs as an unprivileged user.
# PYTHON_IMAGE names the repository of both stages' base (the tag stays pinned here): a registry
# mirror's copy of the official image, or any Debian bookworm root with python3, python3-venv and
# python-is-python3 tagged 3.11-slim-bookworm (the image tests build on such a root, made with
# debootstrap, since no registry is reachable there).
ARG PYTHON_IMAGE=python

FROM ${PYTHON_IMAGE}:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bus ./bus
COPY adapters ./adapters
COPY schemas ./schemas
COPY routing ./routing
COPY ops ./ops
RUN python -m venv /opt/bus \
 && /opt/bus/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/bus/bin/pip install --no-cache-dir '.[tracing]'

FROM ${PYTHON_IMAGE}:3.11-slim-bookworm
LABEL org.opencontainers.image.title="integration-bus" \
      org.opencontainers.image.description="Integration hub: adapters in config, canonical Avro events on Kafka, routing, trustworthy delivery" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 bus \
 && useradd --system --uid 10001 --gid bus --home-dir /nonexistent --shell /usr/sbin/nologin bus
COPY --from=build /opt/bus /opt/bus
# No home directory: the embedded broker runs from the installed package (bus.kafka.broker), and
# nothing else writes under $HOME.
ENV PATH="/opt/bus/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BUS_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080 9090
# The chart probes /healthz itself; this is for plain `docker run`. `bus health` reads the ops
# port from the same config the hub runs with, whatever port it sets.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s \
  CMD ["bus", "health", "--config", "/etc/bus/bus.yaml", "--timeout", "2"]
ENTRYPOINT ["bus"]
CMD ["run", "--config", "/etc/bus/bus.yaml"]
