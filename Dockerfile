# carebridge: one container runs the FHIR/HTTP API (:8080), the MLLP listener (:2575) and the workers.
# Build: docker build -t carebridge .      Run with PostgreSQL: docker compose up (see docs/operations.md)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# pg_dump/pg_restore for `carebridge backup|restore` against PostgreSQL (must match the server major: 15).
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged account: the process never runs as root inside the container.
RUN groupadd --system --gid 10001 carebridge \
 && useradd --system --uid 10001 --gid carebridge --home-dir /app --shell /usr/sbin/nologin carebridge

# The whole source tree (minus .dockerignore) is installed, then removed: only the installed package runs.
COPY . /tmp/carebridge-src
RUN pip install /tmp/carebridge-src \
 && rm -rf /tmp/carebridge-src \
 && mkdir -p /app/var \
 && chown carebridge:carebridge /app/var
WORKDIR /app

# var/ holds the keys (audit signing key, backup key, store encryption keys) and, with SQLite, the database: mount a volume.
VOLUME ["/app/var"]
USER carebridge
EXPOSE 8080 2575

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

CMD ["carebridge", "serve", "--host", "0.0.0.0"]
