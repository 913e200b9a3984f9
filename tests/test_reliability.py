"""Faults and bad input that a long run meets: a full disk, OS errors, and the stage's one-line message."""

import errno
import logging
import os
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from conftest import ROOT

from tlm.corpus import shard_corpus
from tlm.io import TLMInputError
from tlm.smk import run


def fake_snakemake(tmp_path, rule="shard_corpus"):
    return SimpleNamespace(
        rule=rule,
        log=[str(tmp_path / "job.log")],
        output=[str(tmp_path / "results" / "corpus")],
        threads=1,
    )


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            OSError(errno.ENOSPC, "No space left on device"),
            "no space left on the device (or quota) while writing",
        ),
        (
            OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"),
            "no space left on the device",
        ),
        (
            OSError("4096 requested and 0 written"),
            "no space left on the device",
        ),  # numpy's tofile, writing an index
        (OSError("IOError: [Errno 13] Detail: nope"), "permission denied"),
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/corpus.jsonl"),
            "permission denied: /data/corpus.jsonl",
        ),
        (
            FileNotFoundError(errno.ENOENT, "No such file", "/data/part-3.jsonl"),
            "/data/part-3.jsonl vanished while the job ran",
        ),
        (
            TLMInputError("/data/x.jsonl: the compressed file is truncated. Fix: fetch it again."),
            "/data/x.jsonl: the compressed",
        ),
    ],
)
def test_os_errors_and_bad_input_end_the_job_with_one_message(tmp_path, error, expected):
    def main(smk):
        raise error

    with pytest.raises(SystemExit) as exit_:
        run(main, fake_snakemake(tmp_path))
    logging.shutdown()
    text = (tmp_path / "job.log").read_text()
    assert exit_.value.code == 1 and "Traceback" not in text
    assert f"shard_corpus: {expected}" in text and "Fix:" in text


def test_disk_full_while_writing_a_shard_leaves_nothing_behind(tmp_path, monkeypatch):
    (tmp_path / "c.txt").write_text("".join(f"document {i}\n" for i in range(30_000)))
    real = pq.ParquetWriter.write_table
    calls = {"n": 0}

    def full_disk(self, table, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the third batch: a shard is half written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left"):
        shard_corpus([str(tmp_path / "c.txt")], tmp_path / "corpus", shard_size=10_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"], "no shard and no temporary left"
    monkeypatch.setattr(pq.ParquetWriter, "write_table", real)
    assert (
        shard_corpus([str(tmp_path / "c.txt")], tmp_path / "corpus", shard_size=10_000).documents
        == 30_000
    )


# kill -9 at the n-th atomic commit of a job of the rule: after an output is written under its
# temporary name, before it is renamed (train_stage1: while saving its second resumable checkpoint)
# tests/fault_kill/sitecustomize.py arms it in the workflow's processes (none of it is in src/tlm)
FAULT_PYTHONPATH = os.pathsep.join(
    filter(None, [str(ROOT / "tests" / "fault_kill"), str(ROOT / "src"), os.getenv("PYTHONPATH")])
)
FAULTS = [
    ("shard_part", 1),
    ("shard_corpus", 1),
    ("write_shard", 1),
    ("count_terms", 1),
    ("build_index", 1),
    ("retrieve", 1),
    ("train_stage1", 2),
    ("evaluate", 1),
]
TIMES = [
    "seconds",
    "data_seconds",
    "tokens_per_s",
    "mfu",
]  # of train_log.csv: the only columns that differ


def test_kill_9_in_each_stage_then_a_rerun_ends_as_an_uninterrupted_run(tmp_path, done):
    import json

    import numpy as np
    import pandas as pd
    from conftest import smk, tiny_config
    from safetensors.numpy import load_file

    tiny_config(tmp_path)
    for rule, nth in FAULTS:
        proc = smk(
            tmp_path,
            check=False,
            env={"TLM_FAULT_KILL": f"{rule}:{nth}", "PYTHONPATH": FAULT_PYTHONPATH},
        )
        assert proc.returncode != 0 and f"Error in rule {rule}" in proc.stdout + proc.stderr, rule
    resumed = smk(tmp_path)
    assert resumed.returncode == 0
    assert any(
        "resumed from step 2" in log.read_text()
        for log in (tmp_path / "logs/train_stage1").rglob("*.log")
    )

    ours, theirs = tmp_path / "results", done / "results"
    listed = lambda root: sorted(  # noqa: E731 (the report is made on demand, by another test)
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name != "report.html"
    )
    files = [p for p in listed(theirs) if "plm_tlm" not in p.parts]  # `done` trains one run more
    assert files == listed(ours)
    for rel in files:
        a, b = ours / rel, theirs / rel
        if rel.suffix == ".parquet":
            pd.testing.assert_frame_equal(
                pd.read_parquet(a), pd.read_parquet(b), check_exact=True, obj=str(rel)
            )
        elif rel.suffix == ".npy":
            assert np.array_equal(np.load(a), np.load(b)), rel
        elif rel.suffix == ".safetensors":
            x, y = load_file(a), load_file(b)
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), rel
        elif rel.name == "train_log.csv":
            pd.testing.assert_frame_equal(
                pd.read_csv(a).drop(columns=TIMES), pd.read_csv(b).drop(columns=TIMES), obj=str(rel)
            )
        elif rel.suffix == ".json" and rel.parts[0] in ("metrics", "corpus", "index", "tasks"):
            strip = lambda m: (  # noqa: E731 (times differ; an index's vocab.json is a list)
                {k: v for k, v in m.items() if "second" not in k} if isinstance(m, dict) else m
            )
            assert strip(json.loads(a.read_text())) == strip(json.loads(b.read_text())), rel


def test_workflows_sharing_a_corpus_at_once_and_its_cached_index(tmp_path):
    """Two workflows (other tasks, other runs) on one corpus, started at once with Snakemake's
    between-workflow cache: both finish with the same shards and index; a third takes them from
    the cache and builds nothing."""
    import os
    import subprocess

    import pandas as pd
    from conftest import SNAKEMAKE, tiny_config, write_config

    cache = tmp_path / "cache"
    cache.mkdir()
    dirs = [tmp_path / name for name in "abc"]
    for i, d in enumerate(dirs):
        d.mkdir()
        cfg = tiny_config(d)
        cfg["corpus"]["paths"] = [
            str(dirs[0] / p) for p in cfg["corpus"]["paths"]
        ]  # one corpus, shared
        cfg["tasks"]["demo"]["top_k"] = 3 + i
        write_config(d, cfg)

    def start(d):
        # the target first: --cache and --configfile take every argument after them
        cmd = [
            *SNAKEMAKE,
            "results/retrieval/demo/topk.parquet",
            "--directory",
            str(d),
            "--configfile",
            str(d / "config.yaml"),
            "--cache",
        ]
        return subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "SNAKEMAKE_OUTPUT_CACHE": str(cache)},
        )

    runs = [start(d) for d in dirs[:2]]
    outs = [p.communicate(timeout=900)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    nested = [str(p) for p in cache.iterdir() if p.is_dir() and (p / p.name).exists()]
    assert not nested, f"cache entries nested in themselves (both workflows stored them): {nested}"
    third = start(dirs[2])
    out = third.communicate(timeout=900)[0]
    assert third.returncode == 0, out[-3000:]
    assert "from cache" in out, out[-3000:]
    for rule in (
        "shard_corpus",
        "count_terms",
        "corpus_stats",
        "build_index",
    ):  # no job of them ran (their logs are empty)
        assert all(log.stat().st_size == 0 for log in (dirs[2] / "logs").glob(f"{rule}.log")), rule
        assert all(log.stat().st_size == 0 for log in (dirs[2] / "logs" / rule).glob("*.log")), rule
    for rel in ("corpus/shard-00000.parquet", "corpus/shard-00002.parquet"):
        frames = [pd.read_parquet(d / "results" / rel) for d in dirs]
        pd.testing.assert_frame_equal(frames[0], frames[1])
        pd.testing.assert_frame_equal(frames[0], frames[2])
    for i, d in enumerate(dirs):  # each with its own K, from the one index
        assert (
            pd.read_parquet(d / "results/retrieval/demo/topk.parquet")
            .groupby("query_id")
            .size()
            .max()
            == 3 + i
        )
