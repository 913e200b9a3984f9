"""What a changed experiment reruns, job by job: a finished workflow of two tasks, then one change
at a time, and `snakemake -n` must plan exactly the jobs (rule and wildcards) that the change affects."""

import copy
import json
import re

import pandas as pd
import pytest
import yaml
from conftest import smk, tiny_config, write_config

from tlm.corpus.shards import part_name
from tlm.io import read_json
from tlm.retrieval import INDEX_LAYOUT

# tiny_config's 2,500 documents in shards of 900, each file a part: a.parquet's 2,000 in shards
# 00000-00002, b.jsonl.gz's 500 in 00003
SHARDS = ("00000", "00001", "00002", "00003")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two tasks (one with RAKE keyword queries, one with raw text), a tlm run and the tfidf baseline,
    seed 0, the tiny budgets: the leanest experiment in which every kind of change means something."""
    tmp = tmp_path_factory.mktemp("reruns")
    cfg = tiny_config(tmp)
    demo = cfg["tasks"].pop("demo")
    del demo["predict"]
    cfg["tasks"] = {"a": demo, "b": {**demo, "query_mode": "raw", "top_k": 3}}
    cfg["runs"] = {"tlm": cfg["runs"]["tlm"], "tfidf": cfg["runs"]["tfidf"]}
    cfg["corpus"]["part_mb"] = 1e-6  # a part per file (each read by a job of its own)
    write_config(tmp, cfg)
    smk(tmp)
    assert "Nothing to be done" in smk(tmp, "-n").stdout
    return tmp, cfg


def planned(tmp, cfg) -> set[tuple]:
    """The jobs a dry run plans for config `cfg`: (rule, "wildcard=value", ...) each."""
    write_config(tmp, cfg)
    jobs = []
    for line in smk(tmp, "-n").stdout.splitlines():
        rule = re.fullmatch(
            r"\s*(?:local)?(?:rule|checkpoint) (\w+):", line
        )  # a group job's rules are indented
        if rule:
            jobs.append([rule[1]])
        elif jobs and (wildcards := re.fullmatch(r"\s*wildcards: (.*)", line)):
            jobs[-1] += wildcards[1].split(", ")
    return {tuple(job) for job in jobs if job[0] != "all"}


def retrieval(task, shards=SHARDS):
    """The jobs from a task's retrieval to its summary (every shard searched again)."""
    return {
        *(("retrieve", f"task={task}", f"shard={s}") for s in shards),
        ("merge_topk", f"task={task}"),
        ("select_external", f"task={task}"),
        ("retrieval_report", f"task={task}"),
        ("train_tokenizer", f"task={task}"),
        *(
            ("tokenize", f"task={task}", f"source={s}")
            for s in ("train", "dev", "test", "external")
        ),
        *trained(task, "tlm", 0),
        ("export_best", f"task={task}"),
        ("plot_task", f"task={task}"),
    }


def trained(task, run, seed):
    keys = (f"task={task}", f"run={run}", f"seed={seed}")
    if run == "tfidf":
        return {("train_tfidf", *keys)}
    return {(rule, *keys) for rule in ("train_stage1", "train_stage2", "evaluate", "package_model")}


@pytest.fixture
def experiment(finished):
    """The finished experiment and a copy of its config to change; the config is restored after."""
    tmp, cfg = finished
    yield tmp, copy.deepcopy(cfg)
    write_config(tmp, cfg)


def test_adding_a_task_plans_that_task_alone(experiment):
    tmp, cfg = experiment
    cfg["tasks"]["c"] = {**cfg["tasks"]["a"], "top_k": 4}
    assert planned(tmp, cfg) == {
        ("prepare_task", "task=c"),
        ("make_queries", "task=c"),
        *retrieval("c"),
        *trained("c", "tfidf", 0),
        ("summarize",),
    }


def test_removing_a_task_plans_only_the_summary(experiment):
    tmp, cfg = experiment
    del cfg["tasks"]["b"]
    assert planned(tmp, cfg) == {("summarize",)}


def test_changing_one_tasks_k_retrieves_and_trains_that_task_alone(experiment):
    tmp, cfg = experiment
    cfg["tasks"]["b"]["top_k"] = 4
    assert planned(tmp, cfg) == {*retrieval("b"), ("summarize",)}


def test_changing_one_tasks_queries_reruns_that_task_from_its_queries(experiment):
    tmp, cfg = experiment
    cfg["tasks"]["a"]["num_keywords"] = 5
    assert planned(tmp, cfg) == {("make_queries", "task=a"), *retrieval("a"), ("summarize",)}


def test_adding_a_run_plans_its_models_and_what_compares_runs(experiment):
    tmp, cfg = experiment
    cfg["runs"]["task_only"] = {"external": "none"}
    assert planned(tmp, cfg) == {
        *(job for task in "ab" for job in trained(task, "task_only", 0)),
        *(("export_best", f"task={task}") for task in "ab"),
        *(("plot_task", f"task={task}") for task in "ab"),
        ("summarize",),
    }


def test_adding_a_seed_plans_its_models_and_what_compares_runs(experiment):
    tmp, cfg = experiment
    cfg["seeds"] = [0, 1]
    assert planned(tmp, cfg) == {
        *(job for task in "ab" for run in ("tlm", "tfidf") for job in trained(task, run, 1)),
        *(("export_best", f"task={task}") for task in "ab"),
        *(("plot_task", f"task={task}") for task in "ab"),
        ("summarize",),
    }


def test_changing_bm25_k1_rebuilds_the_index_and_keeps_the_counts_and_baselines(experiment):
    tmp, cfg = experiment
    cfg["bm25"]["k1"] = 1.2
    assert planned(tmp, cfg) == {
        *(("build_index", f"shard={s}") for s in SHARDS),
        *retrieval("a"),
        *retrieval("b"),
        ("summarize",),
    }


def test_a_new_index_layout_rebuilds_the_index_alone(experiment):
    """An index built by a tlm of the previous layout (its recorded params say so) is rebuilt."""
    tmp, cfg = experiment
    records = {
        f: f.read_text()
        for f in (tmp / ".snakemake" / "metadata").iterdir()
        if json.loads(f.read_text())["rule"] == "build_index"
    }
    assert len(records) == len(SHARDS)
    try:
        for f, text in records.items():
            record = json.loads(text)
            assert str(INDEX_LAYOUT) in record["params"]
            record["params"] = [
                str(INDEX_LAYOUT - 1) if p == str(INDEX_LAYOUT) else p for p in record["params"]
            ]
            f.write_text(json.dumps(record))
        assert planned(tmp, cfg) == {
            *(("build_index", f"shard={s}") for s in SHARDS),
            *retrieval("a"),
            *retrieval("b"),
            ("summarize",),
        }
    finally:
        for f, text in records.items():
            f.write_text(text)


def test_the_order_of_the_config_keys_plans_nothing(experiment):
    tmp, cfg = experiment
    assert planned(tmp, yaml.safe_load(yaml.safe_dump(cfg, sort_keys=True))) == set()


def test_adding_a_corpus_file_reads_that_file_alone(experiment):
    """Last (it changes the experiment's corpus): a new file is one new part; only it is read, the
    checkpoint assigns the ids again, and only the new shard is written and counted, while every
    index (new global statistics) and everything after retrieval reruns."""
    tmp, cfg = experiment
    texts = pd.read_parquet(tmp / "corpus" / "a.parquet").text
    texts = texts[texts.str.len() < 5000]  # each one document (not cut into passages)
    # 150 new documents and one already in a.parquet (a duplicate, dropped)
    new = [f"{text} (again)" for text in texts.iloc[:150]] + [texts.iloc[0]]
    old = read_json(tmp / "results/corpus/manifest.json")
    (tmp / "corpus" / "c.txt").write_text("".join(" ".join(t.split()) + "\n" for t in new))
    cfg["corpus"]["paths"].append("corpus/c.txt")
    new_part = part_name(["corpus/c.txt"])
    before = planned(tmp, cfg)
    assert {job for job in before if job[0] in ("shard_part", "shard_corpus")} == {
        ("shard_part", f"part={new_part}"),
        ("shard_corpus",),
    }
    smk(tmp, "results/corpus/manifest.json")  # the checkpoint: the shards' plan is now known
    manifest = read_json(tmp / "results/corpus/manifest.json")
    assert manifest["shards"] == 5 and manifest["documents"] == old["documents"] + 150
    assert manifest["skipped"]["duplicate"] == old["skipped"]["duplicate"] + 1
    shards = (*SHARDS, "00004")
    assert planned(tmp, cfg) == {
        ("write_shard", "shard=00004"),
        ("count_terms", "shard=00004"),
        ("corpus_stats",),
        *(("build_index", f"shard={s}") for s in shards),
        *retrieval("a", shards),
        *retrieval("b", shards),
        ("summarize",),
    }
