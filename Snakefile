# TLM: task-driven language modeling (Yao et al., ICML 2022) from a general corpus and a labelled task.
# Stages: shard the corpus -> BM25 index per shard (global statistics) -> retrieve each task's
# neighbours (or embed the corpus per shard: dense / hybrid) -> train a tokenizer -> stage 1
# (MLM + task) -> stage 2 (task) -> evaluate -> summary.

import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.19")  # as pyproject.toml pins it: profiles/default/profile.yaml is read since 9.19

# The library lives in src/tlm: importable here and, through PYTHONPATH, in every job's script
# (also inside the conda environments of envs/, which do not install it).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.getenv("PYTHONPATH")])))
# Nothing is downloaded at run time (models and tokenizers come from local paths), and the jobs'
# logs carry no progress bars.
os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")

from tlm.cache import patch_snakemake_cache
from tlm.config import (
    ConfigError,
    check_task_files,
    predict_files,
    read_config_file,
    resolve_top_k,
    validate_config,
)
from tlm.io import TLMInputError

# The embedded demo runs with a bare `snakemake`; `--configfile my.yaml` runs exactly my.yaml (the
# demo's tasks and runs are not merged in; several files given are merged in their order).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


# Every job's software under `snakemake --sdm apptainer`: the image built from the Dockerfile, as
# tlm.sif beside this Snakefile (README, "Container"). Without --sdm apptainer it is not used.
container: str(Path(workflow.basedir) / "tlm.sif")


# Between-workflow cache (`snakemake --cache`, SNAKEMAKE_OUTPUT_CACHE): the corpus's shards and
# BM25 index, keyed by their inputs' checksums, scripts, params and software, are built once for
# every workflow (task, user) on the same corpus. A result taken from the cache has no benchmark.
CACHING = workflow.workflow_settings.cache is not None
CACHED_RULES = (
    "shard_part",
    "shard_corpus",
    "write_shard",
    "count_terms",
    "corpus_stats",
    "build_index",
)


# Snakemake has read the config files already, keeping the last of a key given twice; they are read
# again strictly so that a repeated key is an error naming its file and line.
try:
    for path in workflow.configfiles:
        read_config_file(path)
    validate_config(
        config,
        source=", ".join(map(str, workflow.configfiles)) or "config",
        schema_path=Path(workflow.basedir) / "config" / "schema.yaml",
    )
    resolve_top_k(config)  # a task without top_k: K from its number of training rows
    check_task_files(config)
except (ConfigError, TLMInputError) as e:
    raise WorkflowError(str(e))


include: "rules/common.smk"
include: "rules/corpus.smk"
include: "rules/index.smk"
include: "rules/retrieve.smk"
include: "rules/dense.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/export.smk"


localrules:
    summarize,
    plot_task,
    package_model,
    export_best,


rule all:
    default_target: True
    input:
        "results/summary.md",
        "results/summary.csv",
        expand("results/plots/{task}/quality_vs_flops.png", task=TASKS),
        expand("results/report/{task}/retrieval.html", task=TASKS),
        expand("results/models/{task}/{key[0]}/seed{key[1]}/model", task=TASKS, key=model_keys()),
        expand("results/export/{task}", task=TASKS if model_keys() else []),
        [
            f"results/predictions/{task}/{run}/seed{seed}.parquet"
            for task in TASKS
            if predict_paths(task)
            for run, seed in model_keys()
        ],


# The summary is shown when it is part of this run's jobs, so current (a partial target, e.g. one
# task's retrieval, must not show a previous run's numbers as if they were new).
onsuccess:
    if Path("results/summary.md").exists() and any(
        "results/summary.md" in job.output for job in workflow.dag.jobs
    ):
        print(Path("results/summary.md").read_text())


if CACHING:  # Snakemake refuses a cached rule with a benchmark (checked once the Snakefile is read)
    for name in CACHED_RULES:
        getattr(rules, name).rule._benchmark = None
    # workflows sharing the cache at once store one copy of each entry (tlm.cache)
    patch_snakemake_cache()
