# The Microscope dashboard as a service: `docker build -t microscope .` then
#   docker run -p 8501:8501 -v /srv/microscope:/data microscope                        # /data/microscope.duckdb
#   docker run -p 8501:8501 -e MICROSCOPE_STORE=s3://lab-bucket/microscope.duckdb microscope
# Secrets (login, allowlist) go in /app/.streamlit/secrets.toml, mounted read-only; see the README, "Deploying".
# Notes are kept in /data/microscope.notes.sqlite; several replicas set MICROSCOPE_NOTES to one PostgreSQL instead.
# Serving only: precompute (torch, timm) is not installed here; build stores elsewhere and publish them.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MICROSCOPE_STORE=/data/microscope.duckdb \
    MICROSCOPE_CACHE=/data/cache \
    MICROSCOPE_NOTES=sqlite:////data/microscope.notes.sqlite \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

WORKDIR /app
# The `serve` and `s3` extras of pyproject.toml (the one list of dependencies), read from it; not the package's own
# dependencies, which bring torch and the rest of precompute. The package itself then goes in with --no-deps.
COPY pyproject.toml /tmp/src/
RUN python -c "import tomllib; extras = tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']\
['optional-dependencies']; print('\n'.join(extras['serve'] + extras['s3']))" > /tmp/serve.txt \
 && pip install -r /tmp/serve.txt && rm /tmp/serve.txt

COPY README.md app.py /tmp/src/
COPY app_pages /tmp/src/app_pages
COPY dashboard /tmp/src/dashboard
COPY store /tmp/src/store
COPY precompute /tmp/src/precompute
RUN pip install --no-deps /tmp/src && rm -rf /tmp/src

RUN useradd --create-home --uid 10001 microscope && mkdir -p /data && chown microscope /data
USER microscope
VOLUME /data
EXPOSE 8501

# Streamlit's own health route, under server.baseUrlPath when one is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD python -c "import os, urllib.request; \
base = os.environ.get('STREAMLIT_SERVER_BASE_URL_PATH', '').strip('/'); \
urllib.request.urlopen(f'http://127.0.0.1:8501/{base + \"/\" if base else \"\"}_stcore/health', timeout=4)"

# Run in /app, so that Streamlit reads /app/.streamlit/secrets.toml (see `microscope serve`).
CMD ["microscope", "serve", "--address", "0.0.0.0", "--port", "8501"]
