"""Sharding a corpus given as many files: the single job of tlm before issue 31 (its
`shard_corpus`, from git) against the three steps of today (shard_part per file, assign_ids once,
write_shard per shard) run as 1 and as N concurrent jobs, each job its own process as Snakemake
runs them, on the same generated corpus (benchmarks/scale.py's documents: real sentences of the
demo corpus), in one run. Checks that every way gives the same documents and ids; reports wall
time, documents/s, the speed-up over the old single job and each job's peak RSS.

    python benchmarks/sharding.py --docs 1000000 --files 20 --jobs 2

Writes results/bench/sharding.md. Run it under `nice` on a shared machine and state the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from common import cpu_name
from scale import make_corpus

ROOT = Path(__file__).resolve().parents[1]
OLD = "69f6587"  # main before issue 31: shard_corpus was one sequential job
PEAK = 'print(json.dumps(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024))'
SHARD_SIZE = 1_000_000  # corpus.shard_size's default


def job(code: str, pythonpath: Path, *args) -> float:
    """One job in a fresh process (as Snakemake runs a script); returns its peak RSS in MB."""
    out = subprocess.run(
        [sys.executable, "-c", f"import json, sys\n{code}\n{PEAK}", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(pythonpath)},
    )
    return float(out.stdout.strip().splitlines()[-1])


def old_single_job(files: list[Path], out: Path, old_src: Path) -> tuple[float, list[float]]:
    code = (
        "from tlm.corpus import shard_corpus\n"
        "shard_corpus(json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), dedup=True)"
    )
    start = time.perf_counter()
    peak = job(code, old_src, json.dumps(list(map(str, files))), out, SHARD_SIZE)
    return time.perf_counter() - start, [peak]


def three_steps(files: list[Path], out: Path, jobs: int, per_part: int) -> tuple[float, dict]:
    """shard_part per part of `per_part` files, assign_ids, write_shard per shard; `jobs`
    processes at a time."""
    src = ROOT / "src"
    part = "from tlm.corpus import shard_part\nshard_part(json.loads(sys.argv[1]), sys.argv[2], dedup=True)"
    ids = (
        "from tlm.corpus import assign_ids\n"
        "assign_ids(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), True)"
    )
    write = (
        "from tlm.corpus import write_shard\n"
        "write_shard(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])"
    )
    groups = [files[i : i + per_part] for i in range(0, len(files), per_part)]
    parts = {f"{i:012x}": out / "parts" / f"{i:012x}" for i in range(len(groups))}
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        peaks = {
            "shard_part": list(
                pool.map(
                    lambda i: job(
                        part, src, json.dumps(list(map(str, groups[i]))), parts[f"{i:012x}"]
                    ),
                    range(len(groups)),
                )
            )
        }
        peaks["assign_ids"] = [
            job(
                ids,
                src,
                json.dumps({k: str(v) for k, v in parts.items()}),
                out / "manifest.json",
                out / "dropped.npz",
                SHARD_SIZE,
            )
        ]
        plan = json.loads((out / "manifest.json").read_text())["shard_plan"]
        peaks["write_shard"] = list(
            pool.map(
                lambda i: job(
                    write,
                    src,
                    parts[plan[i]["part"]],
                    out / "dropped.npz",
                    json.dumps(plan[i]),
                    out / f"shard-{i:05d}.parquet",
                ),
                range(len(plan)),
            )
        )
    return time.perf_counter() - start, peaks


def documents(out: Path) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(p) for p in sorted(out.glob("shard-*.parquet"))], ignore_index=True
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--files-per-part", type=int, nargs="+", default=[1, 10], help="consecutive files a part"
    )
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tlm-sharding")
    ap.add_argument("--out", type=Path, default=ROOT / "results/bench/sharding.md")
    args = ap.parse_args()

    corpus = args.work / f"corpus-{args.docs}-{args.files}"
    if not corpus.exists():
        make_corpus(corpus, args.docs, args.files, seed=0)
    files = sorted(corpus.glob("*.jsonl.gz"))
    old_src = args.work / f"tlm-{OLD}"
    if not old_src.exists():
        old_src.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", OLD, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive.stdout, check=True)

    rows, frames = [], {}
    load = [os.getloadavg()[0]]
    runs = [("old single job (tlm 69f6587)", None, None)] + [
        (f"3 steps, {-(-args.files // k)} parts of {k} files, {jobs} job(s) at a time", jobs, k)
        for k in args.files_per_part
        for jobs in (1, args.jobs)
    ]
    for name, jobs, per_part in runs:
        out = args.work / f"out-{jobs or 'old'}-{per_part}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        if jobs is None:
            seconds, peaks = old_single_job(files, out, old_src / "src")
            peaks = {"shard_corpus": peaks}
        else:
            out.mkdir(parents=True)
            seconds, peaks = three_steps(files, out, jobs, per_part)
        load.append(os.getloadavg()[0])
        frames[name] = documents(out)
        rows.append((name, seconds, peaks))
        print(name, f"{seconds:.1f} s", {k: max(v) for k, v in peaks.items()}, flush=True)

    first = next(iter(frames.values()))
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(frame, first, obj=name)  # the same documents and ids
    base = rows[0][1]
    lines = [
        f"# Sharding {len(first):,} documents (after dedup) from {args.files} .jsonl.gz files",
        "",
        f"{cpu_name()}, {os.cpu_count()} cores; load average (1 min) before and after each way: "
        + ", ".join(f"{x:.1f}" for x in load)
        + f"; shard_size {SHARD_SIZE:,}, dedup on. Each job is a process of its own (as Snakemake runs "
        "them). Every way gives the same documents and ids.",
        "",
        "| way | wall | documents/s | speed-up over the old single job | largest peak RSS of a job |",
        "|---|---|---|---|---|",
    ]
    for name, seconds, peaks in rows:
        rss = ", ".join(f"{step} {max(v):,.0f} MB" for step, v in peaks.items())
        lines.append(
            f"| {name} | {seconds:.1f} s | {len(first) / seconds:,.0f} | {base / seconds:.2f}x | {rss} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
