"""The BM25 index's bytes per document, array by array, and its search speed: this layout against
an earlier one (by default layout 4, tlm 69f6587: a bm25s copy and a forward index of float32
scores), on the same corpus, counts and queries.

    python benchmarks/index_layout.py [--docs 1000000] [--queries 10000] [--reps 2]

1. A corpus of --docs documents of random real sentences of the demo corpus, one shard, built as
   benchmarks/retrieval.py builds its own; count_terms and merge_stats once (both layouts read the
   same counts).
2. build_shard_index of this tree and of the earlier one (its src/ exported with `git archive`
   --old-rev, run with PYTHONPATH on it), each in a fresh process: seconds, peak RSS.
3. Each index's files, grouped by array, in bytes per document.
4. Search time of the same --queries task queries (RAKE keywords and raw texts, top --k, one
   thread), each layout in a fresh process (index memory-mapped, kernel compiled and a few queries
   searched first), old and new alternated --reps times, with the load average at each.
5. Exactness: the new layout's hits must equal the old one's on every query (the old kernel's are
   bm25s's float32 scores, bit for bit), and its top-k equal exhaustive scoring (bm25s's sums over
   every document, `ShardIndex.search_exhaustive`) on --sample queries.

Writes results/bench/index_layout.md and index_layout.json (keeps the data under --work).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

import pandas as pd
from common import cpu_name
from retrieval import ANALYZER, make_corpus, task_queries

ROOT = Path(__file__).resolve().parents[1]


def step_build(work: Path, name: str) -> dict:
    from tlm.retrieval.index import build_shard_index

    start = time.perf_counter()
    build_shard_index(work / "counts", work / "stats", work / name)
    return {"seconds": time.perf_counter() - start}


def step_search(work: Path, name: str, n_queries: int, k: int) -> dict:
    """One thread's search time over the queries (after a warm-up); the hits saved."""
    from tlm.retrieval.search import ShardIndex

    queries = task_queries(n_queries)
    index = ShardIndex(work / name)
    index.search(queries[:200], k)  # compile (cached) and page in the index
    load = os.getloadavg()[0]
    start = time.perf_counter()
    hits = index.search(queries, k)
    seconds = time.perf_counter() - start
    hits.to_parquet(work / f"hits-{name}.parquet")
    return {"seconds": seconds, "load_before": load, "load_after": os.getloadavg()[0]}


def step_exhaustive(work: Path, name: str, n_queries: int, k: int, sample: int) -> dict:
    """Share of --sample queries (spread over all) whose top-k equals exhaustive scoring."""
    from tlm.retrieval.search import ShardIndex

    queries = task_queries(n_queries)
    ids = list(range(0, len(queries), max(1, len(queries) // sample)))[:sample]
    index = ShardIndex(work / name)
    picked = [queries[i] for i in ids]
    ours = index.search(picked, k, query_ids=ids)
    reference = index.search_exhaustive(picked, k, query_ids=ids)
    equal = [
        ours[ours.query_id == q]
        .reset_index(drop=True)
        .equals(reference[reference.query_id == q].reset_index(drop=True))
        for q in ids
    ]
    return {"queries": len(ids), "equal": sum(equal)}


def run_step(args: list[str], pythonpath: Path | None = None) -> dict:
    """One step in a fresh interpreter (with the earlier tree's src/ first on its path, if given);
    its result, with the process's peak RSS."""
    env = {**os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    proc = subprocess.run(
        [sys.executable, __file__, "--step", *args],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def array_bytes(index_dir: Path, num_docs: int) -> dict[str, float]:
    """Bytes per document of each array (file) of an index, largest first."""
    sizes = {
        f.name.removesuffix(".npy").removesuffix(".index"): f.stat().st_size / num_docs
        for f in sorted(index_dir.iterdir())
    }
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


def export_old(rev: str, dest: Path) -> Path:
    """The src/ of commit `rev` of this repository, under dest (once)."""
    if not (dest / "src" / "tlm").exists():
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
    return dest / "src"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--reps", type=int, default=2, help="old/new search timings, alternated")
    p.add_argument("--sample", type=int, default=300, help="queries checked against exhaustive")
    p.add_argument("--old-rev", default="69f6587", help="a commit of the earlier layout")
    p.add_argument("--work", type=Path, default=ROOT / "results" / "bench" / "index_layout")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "index_layout.md")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step:
        name, *rest = args.step
        steps = {"build": step_build, "search": step_search, "exhaustive": step_exhaustive}
        conv = [Path(rest[0]), rest[1], *map(int, rest[2:])]
        result = steps[name](*conv)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({**result, "peak_rss_mb": peak_mb}))
        return

    work = args.work
    corpus = work / "corpus.parquet"
    if not corpus.exists():
        make_corpus(corpus, args.docs, args.seed)
    if not (work / "stats").exists():
        from tlm.retrieval.analyzer import Analyzer
        from tlm.retrieval.index import count_terms, merge_stats

        count_terms(corpus, Analyzer(**ANALYZER), work / "counts", processes=2)
        merge_stats([work / "counts"], work / "stats")
    old_src = export_old(args.old_rev, work / "old")
    res = {"machine": f"{cpu_name()}, {os.cpu_count()} cores", "docs": args.docs, "k": args.k}
    res["build"] = {
        "old": run_step(["build", str(work), "old-index"], old_src),
        "new": run_step(["build", str(work), "new-index"]),
    }
    res["bytes"] = {name: array_bytes(work / f"{name}-index", args.docs) for name in ("old", "new")}
    res["search"] = {"old": [], "new": []}
    for _ in range(args.reps):
        for name in ("old", "new"):
            step = ["search", str(work), f"{name}-index", str(args.queries), str(args.k)]
            res["search"][name].append(run_step(step, old_src if name == "old" else None))
    old_hits = pd.read_parquet(work / "hits-old-index.parquet")
    new_hits = pd.read_parquet(work / "hits-new-index.parquet")
    res["hits_equal"] = bool(old_hits.equals(new_hits))
    res["hits"] = len(new_hits)
    res["exhaustive"] = run_step(
        ["exhaustive", str(work), "new-index", str(args.queries), str(args.k), str(args.sample)]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    args.out.write_text(report(res, args))
    print(args.out.read_text())


def report(res: dict, args) -> str:
    old, new = res["bytes"]["old"], res["bytes"]["new"]
    rows = [
        f"| {name} | {old.get(name, 0):.1f} | {new.get(name, 0):.1f} |"
        for name in sorted(set(old) | set(new), key=lambda n: -max(old.get(n, 0), new.get(n, 0)))
    ]
    times = {name: [r["seconds"] for r in runs] for name, runs in res["search"].items()}
    loads = [
        r[key]
        for runs in res["search"].values()
        for r in runs
        for key in ("load_before", "load_after")
    ]
    return "\n".join(
        [
            f"# Index layout: old ({args.old_rev}) vs new, {res['docs']:,} documents",
            "",
            f"Machine: {res['machine']}; one shard, {args.queries:,} task queries, top-{res['k']},"
            " one thread.",
            "",
            "| array | old bytes/doc | new bytes/doc |",
            "|---|---|---|",
            *rows,
            f"| **total** | **{sum(old.values()):.1f}** | **{sum(new.values()):.1f}** |",
            "",
            "Build: old {:.1f} s ({:.0f} MB peak), new {:.1f} s ({:.0f} MB peak).".format(
                res["build"]["old"]["seconds"],
                res["build"]["old"]["peak_rss_mb"],
                res["build"]["new"]["seconds"],
                res["build"]["new"]["peak_rss_mb"],
            ),
            "Search seconds, alternated old/new: old "
            + ", ".join(f"{t:.2f}" for t in times["old"])
            + "; new "
            + ", ".join(f"{t:.2f}" for t in times["new"])
            + f"; new/old time {sum(times['new']) / sum(times['old']):.3f}"
            + f" (load average {min(loads):.1f}-{max(loads):.1f}).",
            f"Hits of the new layout equal to the old one's on every query: {res['hits_equal']}"
            f" ({res['hits']:,} hits); top-{res['k']} equal to exhaustive scoring on"
            f" {res['exhaustive']['equal']}/{res['exhaustive']['queries']} sampled queries.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
