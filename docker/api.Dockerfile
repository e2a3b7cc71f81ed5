# The search API on CPU: `docker compose up api` (or see docker-compose.yml).
# torch comes from the PyTorch CPU index, so the image carries no CUDA libraries.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY models ./models
COPY indexer ./indexer
COPY service ./service
RUN pip install .

RUN useradd --create-home --uid 1000 prolip && mkdir -p /data && chown prolip /data
USER prolip
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["prolip-retrieval", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
