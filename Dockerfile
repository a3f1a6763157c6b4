# syntax=docker/dockerfile:1.7
# OccluTrace Compute images. One Dockerfile, two final targets that share Python, Ray and the
# package version (Ray refuses nodes and clients whose Python or Ray differ):
#
#   docker build --target cpu -t ghcr.io/occlutrace/occlutrace-compute:0.1.0-cpu .
#       controller, Ray head, CPU workers, bucket job (python:3.11-slim, CPU torch)
#   docker build --target gpu -t ghcr.io/occlutrace/occlutrace-compute:0.1.0-cuda .
#       GPU workers (CUDA runtime, CUDA torch, the [gpu] extra: cupy-cuda13x, pytorch3d)
#
# Build arguments pin every moving part; see docs/deploy.md ("Images").
ARG PYTHON_VERSION=3.11
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG CUDA_VERSION=13.0.1
ARG UV_VERSION=0.9.5

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --------------------------------------------------------------------------------------------
# CPU: build a virtualenv with the CPU torch wheel, Ray and the package.
FROM ${PYTHON_IMAGE} AS cpu-build
ARG TORCH_VERSION=2.13.0
ARG RAY_VERSION=2.60.0
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_NO_CACHE=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# g++ compiles the mesh readers' C++ text scanner (occlutrace_compute/meshes/_textscan.cpp, an
# optional extension: without a compiler the package installs and parses ASCII in Python, ~3x
# slower). Only this build stage has it; the final stage's libstdc++ (bookworm's, which apt
# itself needs) runs the result.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
RUN uv venv --python /usr/local/bin/python3 /opt/venv \
 && uv pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY occlutrace_compute /src/occlutrace_compute
RUN uv pip install "ray[default]==${RAY_VERSION}" /src

FROM ${PYTHON_IMAGE} AS cpu
# wget: the KubeRay operator's default Ray probes call it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --create-home --shell /bin/bash occlutrace
COPY --from=cpu-build /opt/venv /opt/venv
COPY kernels /opt/occlutrace/kernels
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    OCCLUTRACE_KERNELS_DIR=/opt/occlutrace/kernels \
    CUPY_CACHE_DIR=/tmp/cupy-cache \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0
USER 10001:10001
WORKDIR /home/occlutrace
EXPOSE 8000
# The controller's liveness (Kubernetes uses its own probes; this serves `docker run`).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["occlutrace", "serve", "--host", "0.0.0.0", "--port", "8000"]

# --------------------------------------------------------------------------------------------
# GPU: the devel image compiles pytorch3d's CUDA extension; the runtime image gets the result.
# Python comes from uv (python-build-standalone) so that it is 3.11 like the CPU image's.
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS gpu-build
ARG PYTHON_VERSION
ARG TORCH_VERSION=2.13.0
ARG RAY_VERSION=2.60.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu130
# Compute capabilities compiled into pytorch3d: A100, A10/RTX 30, L4/RTX 40, H100/H200, B200.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0"
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_NO_CACHE=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_INSTALL_DIR=/opt/python \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN uv python install "${PYTHON_VERSION}" \
 && uv venv --python "${PYTHON_VERSION}" /opt/venv \
 && uv pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
 && uv pip install setuptools wheel ninja
COPY pyproject.toml README.md /src/
COPY occlutrace_compute /src/occlutrace_compute
# The devel image's g++ also compiles the mesh readers' C++ text scanner (optional extension).
# --no-build-isolation: pytorch3d's build imports the torch installed above.
RUN FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" \
    uv pip install --no-build-isolation "ray[default]==${RAY_VERSION}" "/src[gpu]"

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS gpu
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --create-home --shell /bin/bash occlutrace
COPY --from=gpu-build /opt/python /opt/python
COPY --from=gpu-build /opt/venv /opt/venv
COPY kernels /opt/occlutrace/kernels
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    OCCLUTRACE_KERNELS_DIR=/opt/occlutrace/kernels \
    CUPY_CACHE_DIR=/tmp/cupy-cache \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /home/occlutrace
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["occlutrace", "serve", "--host", "0.0.0.0", "--port", "8000"]
