# A GPU encoder worker: takes query encodings and indexing chunks from Redis.
# CUDA runtime base; torch from the PyTorch CUDA 12.6 index; faiss-gpu and onnxruntime-gpu
# replace their CPU builds.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu126

COPY pyproject.toml README.md ./
COPY models ./models
COPY indexer ./indexer
COPY service ./service
RUN pip install . \
    && pip uninstall -y faiss-cpu onnxruntime \
    && pip install ".[gpu]"

RUN useradd --create-home --uid 1000 prolip
USER prolip

CMD ["prolip-retrieval", "worker", "--redis-url", "redis://redis:6379/0"]
