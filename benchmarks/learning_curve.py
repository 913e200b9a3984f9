"""Learning curve: test macro-F1 against the number of labelled training rows, on the developers'
real tasks (config/tasks.yaml: the demo's and data/build_tasks.py's), with the default budgets.

Each task's training split is cut to |T| = 100, 300, 1,000 rows and kept whole ("full"): a seeded
stratified sample (every label at least once, so dev and test labels stay known; the smaller
samples inside the larger), dev and test unchanged. Every (task, size) becomes a task of one
workflow run in its own directory (results/bench/learning_curve/), which trains the runs of a runs
file (a mapping of runs, or a workflow config whose `runs:` are taken, as config/plm_tlm.yaml;
default: tlm, task_only, random) and `tfidf`, the reference, for every seed:

    python benchmarks/learning_curve.py [--sizes 100 300 1000 full] [--seeds 0 1 2]
        [--tasks debian_sections fortunes pydoc] [--runs FILE.yaml] [--top-k K] [--cores 2] [--dry-run]

It writes results/bench/learning_curve/curve.md (mean ± std over seeds, share of tfidf, FLOPs and
CPU-minutes per run from Snakemake's benchmark files) and curve.png.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "budgets"))
from common import cpu_name, snakemake_cmd  # noqa: E402
from table import runs as finished_runs  # noqa: E402

from tlm.evaluate import markdown_table  # noqa: E402

OUT = ROOT / "results" / "bench" / "learning_curve"
DEFAULT_RUNS = {
    "tlm": {"external": "bm25"},
    "task_only": {"external": "none"},
    "random": {"external": "random"},
}


def stratified_sample(frame: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` rows in proportion to the labels, every label at least once; the rows of a smaller n are
    among those of a larger one (one seeded order, each label's rows taken from its front)."""
    order = frame.sample(frac=1.0, random_state=seed)
    counts = order.label.value_counts()
    share = np.maximum(1, np.floor(counts / len(order) * n)).astype(int)
    while share.sum() < n:  # hand out what flooring left, largest labels first
        share[(counts - share).idxmax()] += 1
    while share.sum() > n:  # more labels than rows allow in proportion: trim the largest
        share[share.idxmax()] -= 1
    picked = order.groupby("label", sort=False).cumcount() < order.label.map(share)
    return order[picked].sort_index()


def build(tasks: dict, sizes: list[str], runs: dict, seeds: list[int], top_k: int | None) -> Path:
    """The task files and the workflow config of the curve (K: `top_k`, or the schema's default);
    returns the config's path."""
    base = yaml.safe_load((ROOT / "config" / "tasks.yaml").read_text())
    config = {k: v for k, v in base.items() if k not in ("tasks", "seeds")}
    config["corpus"]["paths"] = [str(ROOT / p) for p in base["corpus"]["paths"]]
    config |= {"seeds": seeds, "runs": runs, "tasks": {}}
    for task, spec in tasks.items():
        train = pd.read_parquet(ROOT / spec["train"])
        for size in sizes:
            name = f"{task}_{size}"
            entry = {k: v for k, v in spec.items() if k != "top_k"} | {
                s: str(ROOT / spec[s]) for s in ("train", "dev", "test")
            }
            entry |= {"top_k": top_k} if top_k else {}
            if size != "full":
                path = OUT / "tasks" / f"{name}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                stratified_sample(train, int(size)).to_parquet(path)
                entry["train"] = str(path)
            config["tasks"][name] = entry
    path = OUT / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def curve(root: Path) -> pd.DataFrame:
    """One row per (task, size, run): macro-F1 mean and std over seeds, FLOPs, CPU-minutes."""
    df = finished_runs(root)
    df[["base", "size"]] = df.task.str.rsplit("_", n=1, expand=True)
    g = df.groupby(["base", "size", "run"], sort=False)
    return g.agg(
        seeds=("f1", "size"),
        f1=("f1", "mean"),
        sd=("f1", "std"),
        flops=("flops", "mean"),
        cpu=("cpu_min", "mean"),
    )


def table(c: pd.DataFrame) -> str:
    rows = []
    for (task, size, run), r in c.iterrows():
        ref = (
            c.loc[(task, size, "tfidf"), "f1"] if (task, size, "tfidf") in c.index else float("nan")
        )
        rows.append(
            {
                "task": task,
                "train rows": size,
                "run": run,
                "seeds": int(r.seeds),
                "test macro-F1": f"{r.f1:.1f} ± {0 if pd.isna(r.sd) else r.sd:.1f}",
                "of tfidf": "-" if pd.isna(ref) else f"{r.f1 / ref:.0%}",
                "train FLOPs": "-" if pd.isna(r.flops) else f"{r.flops:.1e}",
                "CPU-min": f"{r.cpu:.1f}",
            }
        )
    return markdown_table(pd.DataFrame(rows))


def plot(c: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(c.index.get_level_values(0)))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = c.loc[task].reset_index()
        full = (
            part[part["size"] != "full"]["size"].astype(int).max() * 3
            if (part["size"] != "full").any()
            else 1
        )
        part["n"] = [full if s == "full" else int(s) for s in part["size"]]
        for run, r in part.groupby("run", sort=False):
            r = r.sort_values("n")
            ax.errorbar(r.n, r.f1, yerr=r.sd.fillna(0), marker="o", capsize=3, label=run)
        ax.set_xscale("log")
        ticks = sorted(part.n.unique())
        ax.set_xticks(ticks, ["full" if t == full else str(t) for t in ticks])
        ax.set_title(task)
        ax.set_xlabel("labelled training rows")
        ax.set_ylabel("test macro-F1 (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["100", "300", "1000", "full"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--tasks", nargs="+", default=None, help="of config/tasks.yaml (default: all)")
    ap.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="a YAML file of runs, or a config whose `runs:` are taken (default: tlm, task_only, random)",
    )
    ap.add_argument(
        "--top-k", type=int, default=None, help="K retrieved per example (default: the schema's)"
    )
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    tasks = yaml.safe_load((ROOT / "config" / "tasks.yaml").read_text())["tasks"]
    tasks = {t: tasks[t] for t in args.tasks or tasks}
    runs = yaml.safe_load(args.runs.read_text()) if args.runs else DEFAULT_RUNS
    runs = runs.get("runs", runs) | {"tfidf": {"kind": "tfidf"}}
    config = build(tasks, args.sizes, runs, args.seeds, args.top_k)
    cmd = snakemake_cmd(args.cores)
    cmd += [
        "--directory",
        str(OUT),
        "--keep-going",
        *(["-n"] if args.dry_run else []),
        "--configfile",
        str(config),
    ]
    subprocess.run(cmd, check=not args.dry_run)
    if args.dry_run:
        return
    c = curve(OUT)
    text = f"Learning curve ({cpu_name()}), {OUT}:\n\n{table(c)}\n"
    (OUT / "curve.md").write_text(text)
    plot(c, OUT / "curve.png")
    print(text)


if __name__ == "__main__":
    main()
