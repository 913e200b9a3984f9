"""The demo's training on this machine: train runs the workflow trained again here (both stages, with
the settings each stage recorded), on the GPU where there is one, evaluate them on the test split,
and set time and test macro-F1 beside the workflow's own run (often a CPU one).

    python benchmarks/train_demo.py [--models results/models/debian_sections]
        [--metrics results/metrics/debian_sections] [--runs tlm tlm_2k] [--seed 0]

Reads from --models: {run}/seed{seed}/stage{1,2}/train_result.json (the settings), tokens/{train,
dev,test} and tokens/external (the BM25 data S, for runs with external: bm25), tokenizer; from
--metrics: {run}/seed{seed}.json (the reference). Run the demo first. Writes results/bench/train_demo.md.
A run with its own smaller top_k (S cut to tokens/external-k{k}) is not recorded as such in its stage
settings, so this script would train it on the whole S: give it runs that use the task's top_k.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from tlm.device import pick_device
from tlm.evaluate import evaluate_run
from tlm.io import read_json
from tlm.training.stage import run_stage

EXTERNAL = {"bm25": "external", "random": "random", "none": None}


def train_again(models: Path, run: str, seed: int, tmp: Path) -> dict:
    stage_dirs = []
    labels = read_json(models.parent.parent / "tasks" / models.name / "labels.json")[
        "labels"
    ]  # results/tasks/{task}/
    for stage in ("stage1", "stage2"):
        settings = read_json(models / run / f"seed{seed}" / stage / "train_result.json")["settings"]
        external = EXTERNAL[settings["external"]] if stage == "stage1" else None
        out = tmp / run / stage
        run_stage(
            stage,
            settings,
            models / "tokenizer",
            models / "tokens",
            external and models / "tokens" / external,
            stage_dirs[-1] if stage_dirs else None,
            labels,
            out,
            tmp / run / f"{stage}.csv",
        )
        stage_dirs.append(out)
    return evaluate_run(stage_dirs, models / "tokens" / "test", [])


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", type=Path, default=Path("results/models/debian_sections"))
    ap.add_argument("--metrics", type=Path, default=Path("results/metrics/debian_sections"))
    ap.add_argument("--runs", nargs="+", default=["tlm"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench/train_demo.md")
    args = ap.parse_args()

    device = pick_device()
    name = (
        torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    lines = [
        f"# The demo's training again on {name} (seed {args.seed})",
        "",
        "| run | device | train s | test macro-F1 | reference device | reference train s | reference macro-F1 | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            new = train_again(args.models, run, args.seed, Path(tmp))
            ref = read_json(args.metrics / run / f"seed{args.seed}.json")
            lines.append(
                f"| {run} | {new['device']} | {new['train_seconds']:.1f} | {100 * new['test_macro_f1']:.2f} | "
                f"{ref['device']} | {ref['train_seconds']:.1f} | {100 * ref['test_macro_f1']:.2f} | "
                f"{ref['train_seconds'] / new['train_seconds']:.1f}x |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
