"""The retrieval side of the real workflow at scale: 10^7 documents and 10^5 queries on one machine.

    python benchmarks/scale.py [--docs 10000000] [--files 100] [--queries 100000] [--shard-size 1000000] [--cores 2]

1. A corpus of --docs documents as .jsonl.gz files (--files of them): each document is a run of
   real sentences drawn at random from the demo corpus (data/demo/corpus), as many as a demo
   document has (drawn from their distribution), as benchmarks/retrieval.py does for 10^6; the
   words therefore follow the demo corpus's frequencies.
2. A task of --queries training examples: the demo task's 3,600 real texts, and generated ones of
   3 to 6 sentences drawn from the real texts of one label (the label kept); dev and test are the
   demo's. Queries are RAKE keywords (the demo's setting), K = 50.
3. `snakemake` with a scale config (benchmarks/scale.yaml's settings, paths filled in) through
   the sharding's three steps (shard_part per group of files, the shard_corpus checkpoint,
   write_shard per shard), count_terms, corpus_stats, build_index, make_queries, retrieve,
   merge_topk and select_external (training is not part of this benchmark), timed end to end.
4. Per stage, from Snakemake's own benchmark files (logs/benchmark/): jobs, wall time (sum over
   jobs, and the stage's span), the largest peak RSS of a job, bytes written, docs/s or queries/s.
5. The top-K of a 1% sample of queries against exhaustive scoring (bm25s's float32 sums over
   every document of every shard), and the dry-run DAG time of 1,000 shards x 3 tasks.

Writes results/bench/scale.md (and keeps the generated data and the run under --work).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from common import SENTENCE_END, cpu_name, demo_sentences

from tlm.corpus.shards import part_name

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
STAGES = [
    "shard_part",
    "shard_corpus",
    "write_shard",
    "prepare_task",
    "count_terms",
    "corpus_stats",
    "build_index",
    "make_queries",
    "retrieve",
    "merge_topk",
    "select_external",
]


def make_corpus(out: Path, n_docs: int, n_files: int, seed: int) -> None:
    """n_docs documents of random real sentences, in n_files .jsonl.gz files."""
    sentences, counts = demo_sentences()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    per_file = -(-n_docs // n_files)
    for f in range(n_files):
        n = min(per_file, n_docs - f * per_file)
        with gzip.open(out / f"part-{f:03d}.jsonl.gz", "wt", compresslevel=3) as fh:
            for lo in range(0, n, 100_000):
                sizes = rng.choice(counts, min(100_000, n - lo))
                picks = rng.integers(0, len(sentences), int(sizes.sum()))
                bounds = np.r_[0, np.cumsum(sizes)]
                fh.write(
                    "".join(
                        json.dumps({"text": " ".join(sentences[picks[bounds[i] : bounds[i + 1]]])})
                        + "\n"
                        for i in range(len(sizes))
                    )
                )


def make_task(out: Path, n_train: int, seed: int) -> None:
    """The demo task's texts, and generated training examples from the sentences of one label."""
    out.mkdir(parents=True, exist_ok=True)
    train = pd.read_parquet(DEMO / "task" / "train.parquet").head(n_train)
    rng = np.random.default_rng(seed)
    by_label = {
        label: np.array([s for t in g.text for s in SENTENCE_END.split(t)], dtype=object)
        for label, g in train.groupby("label")
    }
    labels = rng.choice(sorted(by_label), n_train - len(train))
    texts = [" ".join(rng.choice(by_label[label], rng.integers(3, 7))) for label in labels]
    pd.concat(
        [train, pd.DataFrame({"text": texts, "label": labels})], ignore_index=True
    ).to_parquet(out / "train.parquet")
    for split in ("dev", "test"):
        pd.read_parquet(DEMO / "task" / f"{split}.parquet").to_parquet(out / f"{split}.parquet")


def stage_table(work: Path, n_docs: int, n_queries: int) -> list[dict]:
    """Per stage, from Snakemake's benchmark files: jobs, job-seconds, the stage's span (first job's
    start to last job's end; a file is written as its job ends), peak RSS, MB written, throughput."""
    rate = {
        "shard_part": n_docs,
        "write_shard": n_docs,
        "count_terms": n_docs,
        "build_index": n_docs,
        "retrieve": n_queries,
        "make_queries": n_queries,
        "merge_topk": n_queries,
        "select_external": n_queries,
    }
    rows = []
    for stage in STAGES:
        files = sorted((work / "logs" / "benchmark" / stage).rglob("*.tsv")) + sorted(
            (work / "logs" / "benchmark").glob(f"{stage}.tsv")
        )
        if not files:
            continue
        bench = [pd.read_csv(f, sep="\t").iloc[0] for f in files]
        ends = [f.stat().st_mtime for f in files]
        span = max(ends) - min(end - b.s for end, b in zip(ends, bench))
        row = {
            "stage": stage,
            "jobs": len(files),
            "job_seconds": sum(b.s for b in bench),
            "span_seconds": span,
            "max_rss_mb": max(b.max_rss for b in bench),
            "written_mb": sum(b.io_out for b in bench),
        }
        if stage in rate:
            row["rate"] = (
                f"{rate[stage] / span:,.0f} {'docs' if rate[stage] == n_docs else 'queries'}/s"
            )
        rows.append(row)
    return rows


def check_sample(work: Path, fraction: float, k: int, seed: int) -> tuple[int, float]:
    """Share of a sample of queries whose top-K equals exhaustive scoring over every shard."""
    from tlm.retrieval.analyzer import Analyzer
    from tlm.retrieval.merge import merge_topk
    from tlm.retrieval.search import ShardIndex

    queries = pd.read_parquet(work / "results/retrieval/scale/queries.parquet")
    sample = queries.sample(frac=fraction, random_state=seed).sort_values("query_id")
    analyzer = Analyzer(stopwords="en", stemmer="english")
    tokens = [analyzer(t) for t in sample.text]
    reference = merge_topk(
        [
            ShardIndex(d).search_exhaustive(tokens, k, sample.query_id.to_numpy())
            for d in sorted((work / "results/index").glob("shard-*"))
        ],
        k,
    )
    ours = pd.read_parquet(
        work / "results/retrieval/scale/topk.parquet",
        filters=[("query_id", "in", sample.query_id.tolist())],
    )
    hits = {
        name: {q: list(zip(g.doc_id, g.score)) for q, g in frame.groupby("query_id")}
        for name, frame in (("ours", ours), ("reference", reference))
    }
    same = [hits["ours"].get(q) == hits["reference"].get(q) for q in sample.query_id]
    return len(sample), float(np.mean(same))


def dag_seconds(work: Path, shards: int = 1000, tasks: int = 3) -> float:
    """Wall time of `snakemake -n` for a corpus of `shards` shards and `tasks` tasks (shard files
    faked: the DAG is what is timed)."""
    dag = work / f"dag-{shards}"
    corpus = str(DEMO / "corpus" / "part-000.parquet")
    part = part_name([corpus])
    (dag / "results/corpus/parts" / part).mkdir(parents=True, exist_ok=True)
    table = pa.table({"doc_id": pa.array([0], pa.int64()), "text": ["x"]})
    for i in range(shards):
        pq.write_table(table, dag / f"results/corpus/shard-{i:05d}.parquet")
    plan = [
        {"part": part, "rows": [i, i + 1], "first_id": i, "documents": 1, "dropped": ""}
        for i in range(shards)
    ]
    (dag / "results/corpus/manifest.json").write_text(
        json.dumps({"documents": shards, "shards": shards, "shard_plan": plan})
    )
    (dag / "results/corpus/dropped.npz").write_bytes(b"")
    task = {s: str(DEMO / "task" / f"{s}.parquet") for s in ("train", "dev", "test")}
    cfg = {
        "corpus": {"paths": [corpus]},
        "tasks": {f"t{i}": dict(task) for i in range(tasks)},
        "seeds": [0],
        "runs": {"tlm": {"external": "bm25"}},
    }
    (dag / "config.yaml").write_text(yaml.safe_dump(cfg))
    base = [
        *SNAKEMAKE,
        "--directory",
        str(dag),
        "--configfile",
        str(dag / "config.yaml"),
        "--cores",
        "2",
    ]
    subprocess.run(
        [*base, "--touch", "results/corpus/manifest.json"], capture_output=True, check=True
    )  # the checkpoint is done (its shards are there)
    start = time.perf_counter()
    out = subprocess.run([*base, "-n"], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    assert "retrieve" in out.stdout, out.stdout[-2000:]
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--shard-size", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument(
        "--sample",
        type=float,
        default=0.01,
        help="share of the queries checked against exhaustive scoring",
    )
    ap.add_argument("--work", type=Path, default=ROOT / "results/bench/scale")
    ap.add_argument("--out", type=Path, default=ROOT / "results/bench/scale.md")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    work = args.work / f"docs-{args.docs}-queries-{args.queries}"
    corpus, task = work / "corpus", work / "task"
    if not (corpus / "done").exists():
        start = time.perf_counter()
        make_corpus(corpus, args.docs, args.files, args.seed)
        make_task(task, args.queries, args.seed)
        (corpus / "done").write_text(f"{time.perf_counter() - start:.0f} s\n")
    cfg = yaml.safe_load((Path(__file__).parent / "scale.yaml").read_text())
    cfg["corpus"] |= {"paths": [str(corpus / "*.jsonl.gz")], "shard_size": args.shard_size}
    cfg["tasks"]["scale"] |= {s: str(task / f"{s}.parquet") for s in ("train", "dev", "test")} | {
        "top_k": args.top_k
    }
    cfg["resources"]["index_threads"] = args.cores
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    start = time.perf_counter()
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "--directory",
            str(work),
            "--configfile",
            str(work / "config.yaml"),
            "--cores",
            str(args.cores),
            "results/retrieval/scale/external.parquet",
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(proc.stdout[-5000:] + proc.stderr[-5000:])
    rows = stage_table(work, args.docs, args.queries)
    checked, agree = check_sample(work, args.sample, args.top_k, args.seed)
    dag = dag_seconds(args.work)
    index_mb = sum(f.stat().st_size for f in (work / "results/index").glob("shard-*/*")) / 2**20
    manifest = json.loads((work / "results/corpus/manifest.json").read_text())
    lines = [
        f"# Retrieval at scale: {manifest['documents']:,} documents, {args.queries:,} queries, top-{args.top_k}",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; `snakemake --cores {args.cores}`, index_threads {args.cores}, "
        f"shards of {args.shard_size:,}. End to end (shard_part to select_external): **{wall / 60:.1f} min**.",
        "",
        "| stage | jobs | wall s | job-seconds | largest peak RSS (MB) | written (MB) | throughput |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['stage']} | {r['jobs']} | {r['span_seconds']:,.0f} | {r['job_seconds']:,.0f} | "
            f"{r['max_rss_mb']:,.0f} | {r['written_mb']:,.0f} | "
            f"{r.get('rate', '')} |"
            for r in rows
        ),
        "",
        f"Index on disk: {index_mb:,.0f} MB ({index_mb * 2**20 / manifest['documents']:.0f} bytes a document). "
        f"Top-{args.top_k} of {checked:,} sampled queries ({100 * args.sample:g}%) equal to exhaustive scoring: "
        f"{100 * agree:.2f}%.",
        f"Dry run of 1,000 shards x 3 tasks (DAG built, jobs listed): {dag:.1f} s.",
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    (work / "stages.json").write_text(
        json.dumps({"wall": wall, "rows": rows, "agree": agree, "dag": dag}, indent=2)
    )
    print(text)


if __name__ == "__main__":
    main()
