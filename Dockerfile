# tobira's container image.
#
#   docker build -t tobira .
#   docker run -p 8000:8000 -v tobira-data:/data \
#     -e TOBIRA_PUBLIC_URL=https://login.example.com -e TOBIRA_SECRET_KEYS=... tobira
#
# tobira runs as UID/GID 10001: a named volume on /data gets that owner by itself, a bind-mounted
# directory must be made writable for it (chown 10001:10001).
#
# Layout: the image runs the source tree as it is in the repository, /app/app beside /app/templates
# and /app/static, the same layout as a checkout, so the app finds its pages and assets one way
# everywhere (relative to the directory that holds the `app` package). Only the third-party
# dependencies are installed, into a virtualenv; the app itself is not installed as a distribution,
# so there is no second copy of it in site-packages to shadow /app. /app is on PYTHONPATH, so
# `import app` works from any directory (`python -m app.cli ...` too).

# --- builder: a virtualenv with the dependencies only -------------------------------------------
FROM python:3.11-slim-bookworm AS builder

WORKDIR /src
COPY pyproject.toml ./
# The dependency list is read from pyproject.toml so there is one list to maintain. The venv gets no
# pip of its own (the base image's pip installs into it), which keeps pip out of the final image.
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --root-user-action=ignore --requirement requirements.txt

# --- final image ---------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOBIRA_DATA_DIR=/data

# A fixed numeric UID/GID, so that volume ownership and Kubernetes' runAsNonRoot can rely on it. /data
# holds the SQLite store and the generated development keys: readable by tobira alone.
RUN groupadd --system --gid 10001 tobira \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin tobira \
    && mkdir /data \
    && chown 10001:10001 /data \
    && chmod 0700 /data

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Owned by root and read-only for tobira: the code cannot be changed by the process running it.
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY translations ./translations

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# The slim image has no curl; Python's urllib does the probe. The empty ProxyHandler keeps an
# operator's HTTP_PROXY from routing the probe away from the container itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:8000/healthz', timeout=4)"]

# `tobira serve` checks the configuration once, then runs TOBIRA_WORKERS worker processes (one per core
# is a good start) on port 8000; they share state through TOBIRA_STORE_URL. Like uvicorn's
# --no-access-log, it keeps uvicorn's access log off: it would write every request's URL, and /callback's
# query carries the MiAuth session id, which (until it is used) is the one-time ticket to the user's
# token. tobira's own log never contains secrets. Like --no-proxy-headers, it leaves X-Forwarded-* to
# tobira, which believes them only from the addresses in FORWARDED_ALLOW_IPS (default: 127.0.0.1; set it
# to your reverse proxy's address): forward authentication must know which address actually connected.
# The shell only reads the variable: `exec` leaves tobira as PID 1, receiving SIGTERM itself.
ENV TOBIRA_WORKERS=1
CMD ["sh", "-c", "exec python -m app.cli serve --host 0.0.0.0 --port 8000 --workers \"$TOBIRA_WORKERS\""]
