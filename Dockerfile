# The workflow's software in one image, for `snakemake --sdm apptainer` (README, "Container"): what
# `make install` builds (Python 3.11, torch pinned as in the Makefile, `pip install .`), with torch's
# CPU build. For GPU nodes: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 (or any
# CUDA index torch publishes). The demo's `plm` runs need --build-arg EXTRAS=[plm].
FROM python:3.11-slim

ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# git: the model cards name the checkout's commit (tlm.export.workflow_version reads it, read-only)
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

RUN python -m pip install --index-url "$TORCH_INDEX" "$TORCH"

WORKDIR /opt/tlm
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN python -m pip install ".$EXTRAS" && python -c "import tlm, snakemake, torch; print('tlm', tlm.__version__, 'torch', torch.__version__)"

# Jobs run in the workflow's working directory (Snakemake binds it); nothing of the checkout is baked in
# beyond the library, which the Snakefile's PYTHONPATH (src/) overrides where the checkout is visible.
WORKDIR /work
