"""Where TLM's gain appears once compute is real: the prepared GPU experiment.

    python benchmarks/gpu_experiment.py [--budgets 2000 6000 20000] [--share 9] [--cores 16]

On the demo task (run the demo first: its shards, index, S and tokens are reused), the `small`
preset (4 layers, 512 wide) is trained as tlm, task_only and random at each stage-1 budget
(steps of batch 128; stage 2: up to 10 epochs, early stopping), 3 seeds each, by the workflow
itself (benchmarks/gpu_experiment.yaml), `--share` trainings at once on the one GPU
(snakemake --resources gpu=N). It writes results/bench/gpu_experiment.md: test macro-F1 (mean ±
std over seeds) against training FLOPs for each run and budget, and whether, and from what FLOPs,
tlm is ahead of task_only (by more than the seeds' spread), and the quality-vs-FLOPs plot
(results/plots/debian_sections/quality_vs_flops.png). Nothing is tuned toward a result.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import pandas as pd
import yaml
from common import snakemake_cmd

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"tlm": "bm25", "task_only": "none", "random": "random"}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--budgets", type=int, nargs="+", default=[2000, 6000, 20000])
    ap.add_argument("--share", type=int, default=9, help="trainings at once on the GPU")
    ap.add_argument("--cores", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "results/bench/gpu_experiment.md")
    args = ap.parse_args()

    cfg = yaml.safe_load((Path(__file__).parent / "gpu_experiment.yaml").read_text())
    cfg["seeds"] = args.seeds
    cfg["runs"] = {
        f"{kind}_{b}": {"external": ext, "stage1": {"max_steps": b}}
        for b in args.budgets
        for kind, ext in KINDS.items()
    }
    cfg["runs"]["tfidf"] = {"kind": "tfidf"}
    runs_file = ROOT / "results/bench/gpu_experiment_runs.yaml"
    runs_file.parent.mkdir(parents=True, exist_ok=True)
    runs_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # the demo's runs are replaced: only these train (the demo's data and tokens are reused)
    demo = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for key in ("runs", "seeds", "model", "stage1", "stage2", "resources"):  # the experiment's own
        demo.pop(key, None)
    (ROOT / "results/bench/gpu_experiment_base.yaml").write_text(
        yaml.safe_dump(demo, sort_keys=False)
    )
    cmd = snakemake_cmd(
        args.cores,
        "--directory",
        str(ROOT),
        "--resources",
        f"gpu={args.share}",
        "--configfile",
        str(ROOT / "results/bench/gpu_experiment_base.yaml"),
        str(runs_file),
        "results/summary.csv",
        "results/plots/debian_sections/quality_vs_flops.png",
    )
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    minutes = (time.perf_counter() - start) / 60

    summary = pd.read_csv(ROOT / "results/summary.csv")
    summary = summary[summary.run.isin(cfg["runs"])]
    lines = [
        f"# TLM against task_only on the GPU ({args.share} trainings sharing the card; {minutes:.1f} min)",
        "",
        "| stage-1 steps | run | test macro-F1 | train FLOPs | train s |",
        "|---|---|---|---|---|",
    ]
    ahead = []
    for b in args.budgets:
        rows = {kind: summary[summary.run == f"{kind}_{b}"].iloc[0] for kind in KINDS}
        for kind, r in rows.items():
            lines.append(
                f"| {b:,} | {kind} | {100 * r.test_macro_f1:.2f} ± {100 * r.test_macro_f1_std:.2f} | {r.train_flops:.2e} | "
                f"{r.train_seconds:.0f} |"
            )
        t, o = rows["tlm"], rows["task_only"]
        if t.test_macro_f1 - t.test_macro_f1_std > o.test_macro_f1 + o.test_macro_f1_std:
            ahead.append((b, t.train_flops))
    tfidf = (
        summary[summary.run == "tfidf"].test_macro_f1.mean()
        if (summary.run == "tfidf").any()
        else None
    )
    lines += [
        "",
        f"tfidf: {100 * tfidf:.2f}" if tfidf is not None else "",
        (
            f"tlm is ahead of task_only beyond the seeds' spread from {ahead[0][0]:,} stage-1 steps ({ahead[0][1]:.2e} FLOPs) on."
            if ahead
            else "tlm is not ahead of task_only beyond the seeds' spread at any of these budgets."
        ),
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
