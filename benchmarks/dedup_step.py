"""The sharding's global step (assign_ids' exact dedup across parts) at corpus scale: time and peak
RSS of `duplicates_across_parts` (the parts' sorted digests read one range of values at a time)
against the step as it was before (every digest of the corpus concatenated and sorted at once), on
the same synthetic digests (10% of the documents repeat a text of another part), each in a process
of its own, and the two checked equal.

    python benchmarks/dedup_step.py --docs 10000000 30000000 --part-docs 1000000

Writes results/bench/dedup_step.md. Run it under `nice` on a shared machine and state the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import cpu_name

from tlm.corpus.shards import save_digests

ROOT = Path(__file__).resolve().parents[1]
PEAK = 'next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024'
NEW = """
from tlm.corpus.shards import duplicates_across_parts
found = duplicates_across_parts(dirs)
"""
# the global step before: all digests at once, in corpus order, sorted stably; repeats dropped
OLD = """
import numpy as np
words = [np.load(d / "hashes.npy") for d in dirs]
rows = [np.load(d / "rows.npy") for d in dirs]
flat = np.concatenate([w[:, np.argsort(r)].T for w, r in zip(words, rows)])
del words, rows
order = np.lexsort((flat[:, 1], flat[:, 0]))
flat = flat[order]
repeat = np.flatnonzero((flat[1:] == flat[:-1]).all(axis=1)) + 1
found = np.sort(order[repeat])
"""


def make_parts(work: Path, docs: int, part_docs: int, seed: int = 0) -> list[Path]:
    """Parts of random 16-byte digests, each part's distinct (as shard_part leaves them); one
    document in ten repeats a digest of an earlier part."""
    rng = np.random.default_rng(seed)
    dirs, earlier = [], []
    for i, start in enumerate(range(0, docs, part_docs)):
        n = min(part_docs, docs - start)
        words = rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64, endpoint=False)
        if earlier:  # a tenth of the part repeats digests of an earlier part (random 128-bit
            # digests are otherwise distinct); save_digests sorts, so their place does not matter
            words[: n // 10] = earlier[rng.integers(len(earlier))][: n // 10]
        earlier.append(words[n // 10 : n // 5].copy())
        dirs.append(work / f"part{i:05d}")
        dirs[-1].mkdir(parents=True)
        save_digests([words.tobytes()], dirs[-1])
    return dirs


def run(code: str, dirs: list[Path]) -> tuple[float, float, int]:
    """Seconds, peak RSS (MB) and duplicates found by `code` in a fresh process."""
    script = (
        "import json, sys, time\nfrom pathlib import Path\nimport numpy as np\n"
        "dirs = [Path(d) for d in json.loads(sys.argv[1])]\nt = time.perf_counter()\n"
        f"{code}\nt = time.perf_counter() - t\n"
        "n = sum(map(len, found)) if isinstance(found, list) else len(found)\n"
        f"print(json.dumps([t, {PEAK}, int(n)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(map(str, dirs)))],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[10_000_000, 30_000_000])
    ap.add_argument("--part-docs", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tlm-dedup-step")
    ap.add_argument("--out", type=Path, default=ROOT / "results/bench/dedup_step.md")
    args = ap.parse_args()
    lines = [
        "# The sharding's global dedup step",
        "",
        f"{cpu_name()}, {os.cpu_count()} cores; load average (1 min) at the start "
        f"{os.getloadavg()[0]:.1f}; parts of {args.part_docs:,} digests.",
        "",
        "| digests | way | seconds | peak RSS | duplicates |",
        "|---|---|---|---|---|",
    ]
    for docs in args.docs:
        subprocess.run(["rm", "-rf", str(args.work)], check=True)
        dirs = make_parts(args.work, docs, args.part_docs)
        results = {"by ranges (now)": run(NEW, dirs), "all at once (before)": run(OLD, dirs)}
        assert len({r[2] for r in results.values()}) == 1, results  # the same duplicates
        for way, (seconds, peak, found) in results.items():
            lines.append(f"| {docs:,} | {way} | {seconds:.1f} | {peak:,.0f} MB | {found:,} |")
            print(lines[-1], flush=True)
    subprocess.run(["rm", "-rf", str(args.work)], check=True)
    lines.append(f"\nload average (1 min) at the end {os.getloadavg()[0]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
