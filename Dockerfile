# rnnserve: serves the ONNX models in $RNNSERVE_REPOSITORY on port $RNNSERVE_PORT.
#
#   docker build -t rnnserve:gpu .                           onnxruntime-gpu, CUDA/cuDNN from PyPI
#   docker build -t rnnserve:cpu --build-arg RUNTIME=cpu .   the CPU wheel, a much smaller image
#
# onnxruntime-gpu >= 1.27 is built for CUDA 13 (host driver >= 580); on a host with an older
# driver (>= 525) build with --build-arg ONNXRUNTIME_VERSION=1.26.0, the last CUDA 12 wheel.
# docs/deploy.md has the run, volume and compose instructions.

FROM python:3.12.12-slim-bookworm AS base
# ORT_DISABLE_TELEMETRY: onnxruntime's telemetry otherwise prints a coloured, non-JSON warning at
# import when it cannot persist a device id (no home directory, read-only root filesystem).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ORT_DISABLE_TELEMETRY=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

FROM base AS builder
ARG RUNTIME=gpu
ARG ONNXRUNTIME_VERSION=1.31.1
WORKDIR /build
RUN python -m venv "$VIRTUAL_ENV"
# The dependency layer comes from pyproject.toml alone, so editing the source reuses it.
COPY pyproject.toml deploy/requirements.py ./
RUN python requirements.py lines --runtime "$RUNTIME" --extra redis --extra grpc \
        --onnxruntime-version "$ONNXRUNTIME_VERSION" > requirements.txt \
    && pip install --requirement requirements.txt \
    && python requirements.py check --runtime "$RUNTIME"
# Only the online half: export/ (torch) and bench/ stay out of the image.
COPY README.md ./
COPY service/ service/
RUN pip install --no-deps . \
    && python requirements.py check --runtime "$RUNTIME" \
    && python -m pip uninstall --yes --quiet pip setuptools wheel
# The runtime venv is copied without its installer: nothing in the image installs packages.

FROM base AS runtime
RUN groupadd --system --gid 10001 rnnserve \
    && useradd --system --no-log-init --uid 10001 --gid rnnserve \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin rnnserve
COPY --from=builder /opt/venv /opt/venv
# The CUDA/cuDNN wheels keep their libraries under site-packages/nvidia/*/lib and
# onnxruntime's CUDA provider finds them only through the loader's search path.
RUN find /opt/venv -type d -path '*/site-packages/nvidia/*/lib' \
        > /etc/ld.so.conf.d/rnnserve-nvidia.conf \
    && ldconfig
# Baked-in models; mount another repository read-only over /models to replace them.
COPY models/ /models/
ENV RNNSERVE_REPOSITORY=/models \
    RNNSERVE_PORT=8000 \
    RNNSERVE_GRPC_PORT=8001
WORKDIR /srv/rnnserve
USER 10001:10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('RNNSERVE_PORT', '8000') + '/health/ready', timeout=4)"]
CMD ["rnnserve", "serve", "--host", "0.0.0.0"]
