# The Microscope dashboard as a service: `docker build -t microscope .` then
#   docker run -p 8501:8501 -v /srv/microscope:/data microscope                        # /data/microscope.duckdb
#   docker run -p 8501:8501 -e MICROSCOPE_STORE=s3://lab-bucket/microscope.duckdb microscope
# Secrets (login, allowlist) go in /app/.streamlit/secrets.toml, mounted read-only; see the README, "Deploying".
# Serving only: precompute (torch, timm) is not installed here; build stores elsewhere and publish them.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    MICROSCOPE_STORE=/data/microscope.duckdb \
    MICROSCOPE_CACHE=/data/cache \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

WORKDIR /app
COPY requirements-serve.txt .
RUN pip install -r requirements-serve.txt

# Run from the source tree: `microscope serve` starts Streamlit on the app.py beside its package.
COPY app.py pyproject.toml README.md ./
COPY app_pages app_pages
COPY dashboard dashboard
COPY store store
COPY precompute precompute

RUN useradd --create-home --uid 10001 microscope && mkdir -p /data && chown microscope /data
USER microscope
VOLUME /data
EXPOSE 8501

# Streamlit's own health route, under server.baseUrlPath when one is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 CMD python -c "import os, urllib.request; \
base = os.environ.get('STREAMLIT_SERVER_BASE_URL_PATH', '').strip('/'); \
urllib.request.urlopen(f'http://127.0.0.1:8501/{base + \"/\" if base else \"\"}_stcore/health', timeout=4)"

CMD ["python", "-m", "precompute.cli", "serve", "--address", "0.0.0.0", "--port", "8501"]
