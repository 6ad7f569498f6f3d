# syntax=docker/dockerfile:1
#
# The fseg GPU server: `fseg-server serve` on a CUDA build of PyTorch.
#
#   docker build -t fseg-server:0.1.0 .
#   docker run --gpus all -p 50051:50051 \
#     -v /data/fseg/models:/models:ro -v /data/fseg/banks:/banks:ro \
#     -v /data/slides:/slides:ro -v fseg-uploads:/uploads \
#     fseg-server:0.1.0 --host 0.0.0.0 --port 50051 \
#       --extractor uni --weights uni=/models/uni/pytorch_model.bin \
#       --concepts uni-tcga=/banks/uni-tcga.safetensors \
#       --slide-root /slides --upload-dir /uploads --device cuda
#
# Nothing heavy is baked in: model weights are mounted at /models, concept
# banks at /banks, slides (read-only) at /slides, and uploads go to /uploads.
# Arguments after the image name replace CMD, so repeat --host and --port.

# The tag pins PyTorch, CUDA and cuDNN together; pin the digest as well once
# you have pulled it (FROM pytorch/pytorch:<tag>@sha256:...).
ARG BASE_IMAGE=pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

# ---- build: the fseg wheel, from sources only --------------------------------------
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY client ./client
COPY server ./server
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime -------------------------------------------------------------------------
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Weights come from /models, never from the network.
    HF_HUB_OFFLINE=1 \
    # Caches live in /tmp so the root filesystem can be mounted read-only.
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch \
    HF_HOME=/tmp/.cache/huggingface \
    TRITON_CACHE_DIR=/tmp/.cache/triton

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The server extra only (never dev). torch and torchvision stay the base
# image's CUDA builds: the constraints file stops pip from replacing them with
# other builds from the registry.
COPY --from=build /wheels /wheels
RUN { pip list --format=freeze | grep -iE '^(torch|torchvision)==' || true; } > /tmp/keep-base.txt \
 && pip install --constraint /tmp/keep-base.txt "$(ls /wheels/fseg-*.whl)[server]" \
 && rm -rf /wheels /tmp/keep-base.txt \
 && fseg-server --version

# A fixed numeric UID, so Kubernetes can check runAsNonRoot.
RUN groupadd --system --gid 10001 fseg \
 && useradd --system --uid 10001 --gid fseg --home-dir /home/fseg --create-home \
      --shell /usr/sbin/nologin fseg \
 && mkdir -p /models /banks /slides /uploads \
 && chown fseg:fseg /uploads

USER 10001:10001
WORKDIR /home/fseg
EXPOSE 50051

# Plaintext only: with --tls-cert the check needs --tls-ca (Kubernetes ignores
# HEALTHCHECK and uses the probes in deploy/ instead). Loading large weights
# onto the GPU can take minutes, hence the long start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
  CMD ["fseg", "health", "--server", "127.0.0.1:50051"]

ENTRYPOINT ["fseg-server", "serve"]
CMD ["--host", "0.0.0.0", "--port", "50051"]
