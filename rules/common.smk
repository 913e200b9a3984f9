# Wiring only: config access, input functions and path helpers for the rules.

import functools
import glob
import os
import re
from pathlib import Path

from tlm import __version__ as TLM_VERSION
from tlm.config import pretrained_dir, run_settings
from tlm.corpus import group_parts
from snakemake.io import is_flagged
from tlm.io import TLMInputError, read_json
from tlm.retrieval import INDEX_LAYOUT
from tlm.retrievers import CORPUS, RETRIEVERS
from tlm.storage import constant_prefix, is_url, match_keys
from tlm.run_kinds import DEFAULT_PRETRAINED, RUN_KINDS, runs_of_kind, starts_from

TASKS = list(config["tasks"])
RUNS = list(config["runs"])
SEEDS = config["seeds"]
TLM_RUNS = runs_of_kind(config, "tlm")
TFIDF_RUNS = runs_of_kind(config, "tfidf")
PLM_RUNS = runs_of_kind(config, "plm")
# runs that start from a pretrained checkpoint (plm runs, tlm runs with `pretrained`): they read
# their texts in the checkpoint's vocabulary, tokenized per run
CHECKPOINT_RUNS = [run for run, spec in config["runs"].items() if starts_from(spec)]


wildcard_constraints:
    task="[^/]+",
    run="[^/]+",
    shard=r"\d{5}",
    part="[0-9a-f]{12}",
    source="|".join(
        ["train", "dev", "test"]
        + [
            rf"{r.source}|{r.source}-k\d+" if r.ranked else r.source
            for r in RETRIEVERS.values()
            if r.source
        ]
    ),
    seed=r"\d+",


@functools.cache
def corpus_files():
    """The corpus's files (path or URL -> bytes), in the order of corpus.paths, each glob sorted."""
    files, seen = {}, {}
    for pattern in config["corpus"]["paths"]:
        matches = storage_files(pattern) if is_url(pattern) else local_files(pattern)
        if not matches and os.path.isdir(pattern):
            raise WorkflowError(
                f"corpus.paths: {pattern!r} is a folder. Fix: give its files as a glob, "
                f"e.g. '{os.path.join(pattern, '*.jsonl')}'."
            )
        if not matches:
            raise WorkflowError(
                f"corpus.paths: {pattern!r} matches no file. Fix: point `corpus.paths` at your corpus "
                "(relative paths start at the working directory; s3://bucket/key for object storage)."
            )
        for f in matches:  # a file read twice would count every document twice (or as duplicates)
            if (real := f if is_url(f) else os.path.realpath(f)) in seen:
                raise WorkflowError(
                    f"corpus.paths: {f!r} is listed twice (also as {seen[real]!r}, directly or through a glob). "
                    "Fix: list each corpus file once."
                )
            seen[real] = f
        files.update(matches)
    return files


def local_files(pattern):
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    if any(not Path(m).is_file() for m in matches):
        return {}
    return {m: os.path.getsize(m) for m in matches}


def storage_files(pattern):
    """The objects a URL names (a glob over the keys of an s3:// bucket) with their sizes, listed
    through Snakemake's storage plugin (its settings: --storage-s3-endpoint-url, ...)."""
    obj = storage(pattern).flags["storage_object"]
    bucket_url = pattern[: len(pattern) - len(obj.key)]
    if not hasattr(obj.provider, "s3c"):
        raise WorkflowError(
            f"corpus.paths: {pattern!r}: only s3:// URLs are listed here. "
            "Fix: give s3:// URLs, or copy the corpus to a local or s3 path."
        )
    listing = obj.provider.s3c.Bucket(obj.bucket).objects.filter(Prefix=constant_prefix(obj.key))
    sizes = {o.key: o.size for o in listing}
    return {bucket_url + key: sizes[key] for key in match_keys(obj.key, sizes)}


def data_input(path):
    """A path of the config as a rule's input: an object in storage (a URL), or a local file (also
    when results go to a default storage provider)."""
    if is_url(path):
        return storage(path)
    return local(path) if workflow.storage_settings.default_storage_provider else path


@functools.cache
def corpus_parts():
    """The corpus's parts (name -> files, in order), one shard_part job each (tlm.corpus.group_parts)."""
    files = corpus_files()
    return group_parts(list(files), list(files.values()), config["corpus"]["part_mb"])


def corpus_manifest():
    """The manifest of the shard_corpus checkpoint (known once it has run), read once a version."""
    path = checkpoints.shard_corpus.get().output.manifest
    if not os.path.exists(path) and is_flagged(path, "storage_object"):  # results in storage
        path.flags["storage_object"].retrieve_object()
    return read_manifest(path, os.path.getmtime(path))


@functools.cache
def read_manifest(path, mtime):
    return read_json(path)


def shards(wildcards=None):
    """Shard ids, known once the shard_corpus checkpoint has run."""
    return [f"{i:05d}" for i in range(corpus_manifest()["shards"])]


def shard_plan(shard):
    """What shard {shard} holds: its part, rows, first id and a digest of the rows dropped."""
    return corpus_manifest()["shard_plan"][int(shard)]


def corpus_shards(wildcards=None):
    """Every shard of the corpus (for rules that read documents from them)."""
    return expand("results/corpus/shard-{shard}.parquet", shard=shards())


def analyzer_params():
    return {key: config["bm25"][key] for key in ("lowercase", "stopwords", "stemmer", "analyzer")}


def task_cfg(wildcards):
    return config["tasks"][wildcards.task]


def task_split(split):
    return f"results/tasks/{{task}}/{split}.parquet"


def retriever(wildcards):
    """How run {run}'s external data S is chosen: its row of the retrievers table (tlm.retrievers)."""
    return RETRIEVERS[config["runs"][wildcards.run]["external"]]


def external_data(wildcards):
    """The external data S of a run (its retriever's file), or none."""
    source = retriever(wildcards).source
    return [f"results/retrieval/{wildcards.task}/{source}.parquet"] if source else []


def token_source(wildcards):
    """The Parquet file behind a tokenized source: a task split or the external data of a retriever
    (external-kN: the documents of S whose best rank is <= N)."""
    if wildcards.source in ("train", "dev", "test"):
        return f"results/tasks/{wildcards.task}/{wildcards.source}.parquet"
    return f"results/retrieval/{wildcards.task}/{wildcards.source.split('-k')[0]}.parquet"


def max_rank(wildcards):
    """K of a run that uses a smaller K than its task retrieved (0: every document of S): of a
    tokenized source by its name (external-kN), else of run {run}."""
    if wildcards.get("source") is not None:
        return int(wildcards.source.split("-k")[1]) if "-k" in wildcards.source else 0
    spec = config["runs"][wildcards.run]
    return spec.get("top_k", 0) if retriever(wildcards).ranked else 0


def external_tokens(wildcards):
    """A run's tokenized external data: in the task's vocabulary, or a checkpoint run's own."""
    k = config["runs"][wildcards.run].get("top_k")
    if k and k > config["tasks"][wildcards.task]["top_k"]:
        raise WorkflowError(
            f"runs.{wildcards.run}.top_k = {k} exceeds tasks.{wildcards.task}.top_k = "
            f"{config['tasks'][wildcards.task]['top_k']}. Fix: retrieve at least as many (raise the task's top_k)."
        )
    source = retriever(wildcards).source
    if source and k and retriever(wildcards).ranked:  # S cut to the run's K (best rank <= K)
        source = f"{source}-k{k}"
    return [f"{tokens_dir(wildcards)}/{source}"] if source else []


def tokens_dir(wildcards):
    """Where run {run}'s tokenized texts are: the task's vocabulary, shared by its from-scratch
    runs, or a checkpoint run's own (tokenize_plm)."""
    if wildcards.run in CHECKPOINT_RUNS:
        return f"results/models/{wildcards.task}/{wildcards.run}/tokens"
    return f"results/models/{wildcards.task}/tokens"


def run_tokens(wildcards):
    return [f"{tokens_dir(wildcards)}/{split}" for split in ("train", "dev")]


def run_tokenizer(wildcards):
    """The tokenizer of run {run}: the task's WordPiece, or its checkpoint's."""
    if wildcards.run in CHECKPOINT_RUNS:
        return plm_checkpoint(wildcards)
    return f"results/models/{wildcards.task}/tokenizer"


def tokens_max_length(wildcards):
    """A task's cached tokens are cut at the longest max_seq_length of its runs; each run cuts further."""
    runs = [run for run in TLM_RUNS if run not in CHECKPOINT_RUNS]
    return max(
        [run_settings(config, run, 0, wildcards.task)["model"]["max_seq_length"] for run in runs],
        default=8,
    )


def sorted_keys(value):
    """`value` with the keys of every mapping sorted: Snakemake compares params by their repr, so
    the order of the keys in a config file must not rerun anything."""
    if isinstance(value, dict):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    return value


def stage_settings(stage):
    """The settings one training stage of run {run}, seed {seed} depends on (its rule's params)."""
    keep = {
        "stage1": ("model", "stage1", "trainer", "seed", "external", "pretrained"),
        "stage2": ("model", "stage2", "trainer", "seed", "pretrained"),
    }[stage]
    return lambda wc: sorted_keys(
        {k: v for k, v in run_settings(config, wc.run, int(wc.seed), wc.task).items() if k in keep}
    )


def stage_dirs(task, run, seed):
    """The checkpoints behind a run's metrics: stage 1, and stage 2 unless the run skips it (a plm
    run has only its fine-tuning, which is stage 2)."""
    spec = config["runs"][run]
    return [
        f"results/models/{task}/{run}/seed{seed}/{s}"
        for s in RUN_KINDS[spec["kind"]].trained_stages(spec)
    ]


def trained_stages(wildcards):
    return stage_dirs(wildcards.task, wildcards.run, wildcards.seed)


def one_of(names):
    """A wildcard constraint matching exactly these names (a rule only for some runs)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def plm_checkpoint(wildcards):
    """The local pretrained checkpoint directory run {run} starts from."""
    try:
        return data_input(str(pretrained_dir(run_settings(config, wildcards.run, 0)["pretrained"])))
    except TLMInputError as e:
        raise WorkflowError(str(e).replace("runs.*.", f"runs.{wildcards.run}.")) from None


def uses_corpus():
    """Whether any run needs the corpus (external data, or a tokenizer trained on S)."""
    external = any(RETRIEVERS[spec["external"]].source for spec in config["runs"].values())
    return external or (
        bool(set(TLM_RUNS) - set(CHECKPOINT_RUNS)) and config["tokenizer"]["path"] is None
    )


def model_keys():
    """(run, seed) of every trained model (tfidf runs save none)."""
    return [(run, seed) for run in TLM_RUNS + PLM_RUNS for seed in SEEDS]


def predict_paths(task):
    return predict_files(config["tasks"][task])


def model_info(wildcards):
    """What a model card says of the task, the run and the corpus (sizes are read in the job)."""
    t, spec = config["tasks"][wildcards.task], config["runs"][wildcards.run]
    return {
        "task": {
            "name": wildcards.task,
            "query_mode": t["query_mode"],
            "top_k": t["top_k"],
            # the card's licence and language, when the task gives them (a task without keeps its params)
            **{key: t[key] for key in ("license", "language") if key in t},
        },
        "run": {
            "name": wildcards.run,
            "seed": int(wildcards.seed),
            "kind": spec["kind"],
            "external": spec["external"],
            "top_k": spec.get("top_k"),
        },
        "corpus": {"paths": config["corpus"]["paths"]},
        "pretrained": starts_from(spec),
    }


def test_tokens(wildcards):
    """A run's tokenized test split: the task's vocabulary, or a checkpoint run's own."""
    return f"{tokens_dir(wildcards)}/test"


def dense_encoder():
    """The settings the embeddings depend on (their jobs' params)."""
    dense = config["dense"]
    return {
        "encoder": dense["encoder"] or DEFAULT_PRETRAINED,
        "max_length": dense["max_length"],
        "dtype": dense["dtype"],
    }


def dense_depth(wildcards):
    """Hits per query of a dense list: the task's K (the dense retriever), or N (hybrid's list)."""
    if wildcards.ranking == "hybrid":
        return config["hybrid"]["candidates"]
    return task_cfg(wildcards)["top_k"]
