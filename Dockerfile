# weightwatch in a container. Build and run: docs/deployment.md#container
#   docker build -t weightwatch .
#   docker compose -f deploy/compose.yaml up -d
# The base is pinned to a Python minor version and a Debian release; pin it by digest
# (python:3.11-slim-bookworm@sha256:...) where builds must be reproducible.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A system user of its own; its state directory private to it (the database holds
# watermark keys, tensor prints and the evidence of leaks).
RUN groupadd --system --gid 10001 weightwatch \
    && useradd --system --uid 10001 --gid weightwatch --home-dir /var/lib/weightwatch \
       --no-create-home --shell /usr/sbin/nologin weightwatch \
    && install -d -m 0700 -o weightwatch -g weightwatch /var/lib/weightwatch

# The README's install, into /opt/weightwatch (owned by root: the service cannot change
# its own code).
WORKDIR /opt/weightwatch
# setup.py builds the stitched digest lane (fingerprints/_stitch.c) where a C compiler is
# present; the slim image has none, so the digest pass uses hashlib (same digests, about a
# third more CPU in `register`).
COPY pyproject.toml setup.py README.md LICENSE ./
COPY monitor ./monitor
COPY fingerprints ./fingerprints
COPY demo ./demo
RUN python3 -m venv .venv && .venv/bin/pip install -q -e .

ENV PATH=/opt/weightwatch/.venv/bin:$PATH \
    WEIGHTWATCH_CONFIG=/etc/weightwatch/config.toml \
    XDG_CACHE_HOME=/var/lib/weightwatch/.cache \
    CREDENTIALS_DIRECTORY=/run/secrets

USER weightwatch
WORKDIR /var/lib/weightwatch
VOLUME ["/var/lib/weightwatch"]
# Every command runs on the database in the volume, whatever database.path the mounted
# config says: `docker compose run --rm weightwatch hits` reads what the daemon writes.
ENTRYPOINT ["weightwatch", "--db", "/var/lib/weightwatch/weightwatch.db"]
CMD ["run"]
# Exit 1 with the reason when a target is down, the outbox is stuck or the daemon's
# heartbeat is stale.
HEALTHCHECK --interval=5m --timeout=30s --start-period=2m --retries=2 \
    CMD ["weightwatch", "--db", "/var/lib/weightwatch/weightwatch.db", "health"]
