"""The table of a budget run (config/budgets.yaml, benchmarks/budgets/sweep.yaml): per task and run,
test macro-F1 as mean ± std over seeds, training FLOPs, and the CPU-minutes of a run (stage 1 +
stage 2 + evaluation, or the tfidf job) from Snakemake's own benchmark files, beside 90% of tfidf.

    python benchmarks/budgets/table.py [workflow directory, default .]

Prints the Markdown table and writes it to results/bench/budgets.md in that directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from tlm.evaluate import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import cpu_name  # noqa: E402

JOBS = ("train_stage1", "train_stage2", "finetune_plm", "evaluate", "train_tfidf")


def cpu_minutes(root: Path, task: str, run: str, seed: str) -> float:
    """CPU time of a run's jobs (Snakemake's benchmark column cpu_time), in minutes."""
    files = [root / f"logs/benchmark/{job}/{task}/{run}/{seed}.tsv" for job in JOBS]
    return sum(pd.read_csv(f, sep="\t")["cpu_time"].iloc[0] for f in files if f.exists()) / 60


def runs(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(root.glob("results/metrics/*/*/seed*.json")):
        if path.stem.endswith("-test"):
            continue
        task, run, seed = path.parts[-3], path.parts[-2], path.stem
        m = json.loads(path.read_text())
        rows.append(
            {
                "task": task,
                "run": run,
                "f1": 100 * m["test_macro_f1"],
                "flops": m.get("train_flops"),
                "cpu_min": cpu_minutes(root, task, run, seed),
            }
        )
    return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> str:
    g = df.groupby(["task", "run"], sort=False)
    out = g.agg(
        seeds=("f1", "size"),
        f1=("f1", "mean"),
        sd=("f1", "std"),
        flops=("flops", "mean"),
        cpu=("cpu_min", "mean"),
    )
    out["cpu_max"] = g["cpu_min"].max()
    tfidf = (
        out.xs("tfidf", level="run")["f1"]
        if "tfidf" in out.index.get_level_values("run")
        else pd.Series(dtype=float)
    )
    rows = []
    for (task, run), r in out.iterrows():
        ref = tfidf.get(task, float("nan"))
        rows.append(
            {
                "task": task,
                "run": run,
                "seeds": int(r.seeds),
                "test macro-F1": f"{r.f1:.2f} ± {0 if pd.isna(r.sd) else r.sd:.2f}",
                "of tfidf": f"{r.f1 / ref:.0%}",
                "train FLOPs": "-" if pd.isna(r.flops) else f"{r.flops:.2e}",
                "CPU-min per run": f"{r.cpu:.1f} (max {r.cpu_max:.1f})",
                "90% of tfidf": f"{0.9 * ref:.1f}",
            }
        )
    return markdown_table(pd.DataFrame(rows))


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    text = f"Budget runs in {root} ({cpu_name()}):\n\n{table(runs(root))}\n"
    print(text)
    out = root / "results/bench/budgets.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
