"""Test-set quality of a trained run next to what it cost, and the summary table of all runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tlm.config import DEFAULT_BUDGET
from tlm.data import SPLITS, hygiene_notes
from tlm.inference import load_model, predict_proba, probabilities
from tlm.io import atomic_path, read_json, write_parquet
from tlm.metrics import classification_metrics, paper_flops
from tlm.model import count_parameters
from tlm.select import external_size
from tlm.tokens import EVAL_BUCKET, Batches, TokenStore


def evaluate_run(
    stage_dirs: list,
    tokens_dir,
    external_paths: list,
    precision: str = "auto",
    max_rank: int = 0,
    predictions_path=None,
) -> dict:
    """Test metrics of the last stage's model, loaded as plain transformers loads it; costs summed
    over every trained stage. `predictions_path`: where the test predictions go (`probabilities`)."""
    final = Path(stage_dirs[-1])
    model, tokenizer, device, dtype = load_model(final, precision)
    test = TokenStore.load(tokens_dir)
    batches = Batches(
        test,
        256,
        tokenizer.pad_token_id,
        seed=0,
        shuffle=False,
        bucket=EVAL_BUCKET,
        max_len=tokenizer.model_max_length,
        sep_id=tokenizer.sep_token_id,
    )
    probs = batches.in_store_order(predict_proba(model, batches.epoch(), device, dtype))
    scores = classification_metrics(test.labels, probs.argmax(-1), model.config.num_labels)
    if predictions_path:
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        frame = probabilities(probs, labels)
        frame.insert(0, "row", range(len(test)))
        frame.insert(1, "true_label", [labels[y] for y in test.labels])
        write_parquet(frame, predictions_path)

    stages = {Path(d).name: read_json(Path(d) / "train_result.json") for d in stage_dirs}
    majority = np.bincount(test.labels).max() / max(len(test), 1)
    last = stages[final.name]
    params = count_parameters(model)
    tokens = sum(s["tokens"] for s in stages.values())
    external_docs, external_bytes = external_size(external_paths, max_rank)
    return {
        **{f"test_{k}": v for k, v in scores.items()},
        "dev_macro_f1": last["dev"].get("macro_f1"),
        "parameters": params["total"],
        "train_flops": sum(s["flops"] for s in stages.values()),
        "train_flops_6nd": paper_flops(params["total"], tokens),
        "train_tokens": tokens,
        "train_seconds": sum(s["seconds"] for s in stages.values()),
        "tokens_per_second": tokens / max(sum(s["seconds"] for s in stages.values()), 1e-9),
        "padding_share": 1
        - tokens / max(sum(s.get("padded_tokens", 0) for s in stages.values()), 1),
        "stage1_steps": stages["stage1"]["steps"]
        if "stage1" in stages
        else 0,  # a plm run has stage 2 only
        "stage1_external_steps": stages["stage1"]["external_steps"] if "stage1" in stages else 0,
        "stage2_steps": stages["stage2"]["steps"] if "stage2" in stages else 0,
        "best_step": last["best_step"],
        "external_docs": external_docs,
        "external_bytes": external_bytes,
        "device": last["device"],
        "stopped_early": last.get("stopped_early", False),
        "planned_steps": last.get("planned_steps"),
        "train_examples": last["train_examples"],
        "test_examples": len(test),
        "test_majority_share": float(majority),
        "diagnostics": diagnose(final),
        # passes over the task's training set, by the task batches (the unit of the epochs budgets)
        "epochs": {
            name: s["task_steps"] * s["plan"]["batch_size"] / s["train_examples"]
            for name, s in stages.items()
        },
    }


def diagnose(stage_dir) -> dict:
    """What a stage's training log says about how it ended: whether dev macro-F1 was still at its
    best at the last evaluation (the budget, not the model, ended it), how far the task loss fell
    (from the first to the last tenth of the task batches), and its steps against the floor of the
    preset's default budget (min_steps)."""
    log = pd.read_csv(Path(stage_dir) / "train_log.csv")
    plan = read_json(Path(stage_dir) / "train_result.json").get("plan", {})
    evals = log.dropna(subset=["dev_macro_f1"])
    task = log.dropna(subset=["task_loss"]).task_loss.to_numpy()
    tenth = max(1, len(task) // 10)
    return {
        "stage": Path(stage_dir).name,
        "steps": int(log.step.max()) if len(log) else 0,
        "min_steps": plan.get("min_steps", 0),
        "evaluations": len(evals),
        "best_evaluation": int(evals.dev_macro_f1.to_numpy().argmax()) + 1 if len(evals) else 0,
        "still_rising": bool(
            len(evals) >= 2 and evals.dev_macro_f1.iloc[-1] >= evals.dev_macro_f1.max()
        ),
        "task_loss_start": float(task[:tenth].mean()) if len(task) else None,
        "task_loss_end": float(task[-tenth:].mean()) if len(task) else None,
    }


SUMMARY_COLUMNS = {  # metrics.json key -> column of the summary table
    "test_accuracy": "accuracy",
    "test_macro_f1": "macro-F1",
    "test_micro_f1": "micro-F1",
    "dev_macro_f1": "dev macro-F1",
    "train_flops": "train FLOPs",
    "train_tokens": "tokens",
    "external_docs": "S docs",
    "external_bytes": "S bytes",
    "train_seconds": "train s",
    "tokens_per_second": "tokens/s",
    "padding_share": "padding %",
}
QUALITY = ("test_accuracy", "test_macro_f1", "test_micro_f1", "dev_macro_f1")


def markdown_table(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def read_runs(metric_paths: list) -> pd.DataFrame:
    """One row per metrics file (results/metrics/{task}/{run}/seed{seed}.json): task, run, seed, metrics."""
    rows = []
    for path in map(Path, metric_paths):
        rows.append(
            {
                "task": path.parent.parent.name,
                "run": path.parent.name,
                "seed": int(path.stem[4:]),
                **read_json(path),
            }
        )
    return pd.DataFrame(rows)


def model_flag(metric_path, baseline_paths: list) -> str:
    """The summary's flag (run_flags) of one trained model, against its task's tfidf runs; "" if none."""
    return next(iter(run_flags(read_runs([metric_path, *baseline_paths])).values()), "")


def summary_table(metric_paths: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metrics files as one row per (task, run, seed) (`read_runs`), and the summary: one row per
    (task, run), mean and standard deviation over seeds of quality, mean of costs, in the order of the files."""
    runs = read_runs(metric_paths)
    runs = runs.reindex(
        columns=list(dict.fromkeys([*runs.columns, *SUMMARY_COLUMNS]))
    )  # a baseline has no throughput
    groups = runs.groupby(["task", "run"], sort=False)
    table = groups[list(SUMMARY_COLUMNS)].agg(lambda v: pd.to_numeric(v).mean())
    for key in QUALITY:
        table[f"{key}_std"] = groups[key].std(ddof=1).fillna(0.0)
    table["seeds"] = groups.size()
    table["device"] = groups["device"].first()
    order = runs[["task", "run"]].drop_duplicates()  # the config's order, not alphabetical
    return runs, order.merge(table.reset_index(), on=["task", "run"])


def summarize(
    metric_paths: list, md_path, csv_path, hygiene: dict | None = None, manifest=None
) -> pd.DataFrame:
    """The summary table (`summary_table`) as CSV and markdown; the markdown adds flags on runs and
    what was found in the data: `hygiene` ({task: its hygiene.json}) and the corpus's `manifest`
    (manifest.json), each optional."""
    runs, table = summary_table(metric_paths)
    shown = table[["task", "run", "seeds"]].copy()
    for key, name in SUMMARY_COLUMNS.items():
        if key in QUALITY:
            shown[name] = [
                f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(table[key], table[f"{key}_std"])
            ]
        else:
            fmt = {"train_flops": "{:.2e}", "padding_share": "{:.1%}"}.get(key, "{:.0f}")
            shown[name] = [("-" if pd.isna(v) else fmt.format(v).rstrip("%")) for v in table[key]]
    shown["device"] = table["device"]
    text = (
        "# TLM results\n\nTest split unless marked dev; F1 and accuracy in %, mean ± std over seeds; "
        "costs are means per seed.\n\n" + markdown_table(shown)
    )
    flags = run_flags(runs)
    table["flag"] = [flags.get((t, r), "") for t, r in zip(table.task, table.run)]
    if flags:
        text += "\n## Flags\n\n" + "".join(
            f"- {t} / {r}: {flag}\n" for (t, r), flag in flags.items()
        )
    data = data_notes(hygiene or {}, manifest)
    if data:
        text += "\n## Data\n\n" + "".join(f"- {note}\n" for note in data)
    if "pretraining" in runs:  # runs from a checkpoint: their train FLOPs leave out its pretraining
        notes = runs.dropna(subset=["pretraining"]).drop_duplicates("run")
        text += "".join(
            f"\n{r.run}: train FLOPs count the {'fine-tuning' if r.stage1_steps == 0 else 'training from the checkpoint'} "
            f"only; its pretraining, as documented: {r.pretraining}\n"
            for r in notes.itertuples()
        )
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text(text)
    return table


def data_notes(hygiene: dict, manifest) -> list[str]:
    """The corpus's counts (what was kept, split and skipped, by cause) and each task's hygiene notes."""
    notes = []
    if manifest:
        m = read_json(manifest)
        skipped = (
            ", ".join(f"{n:,} {cause.replace('_', ' ')}" for cause, n in m["skipped"].items() if n)
            or "none"
        )
        notes.append(
            f"corpus: {m['documents']:,} documents from {m['records']:,} records in {m['shards']} shards; "
            f"{m['long_documents']:,} long documents cut into passages (or truncated); skipped: {skipped}"
        )
    for task, path in hygiene.items():
        report = read_json(path)
        rows = ", ".join(f"{report[s]['kept']:,} {s}" for s in SPLITS)
        notes += hygiene_notes(task, report) or [
            f"{task}: {rows} examples, nothing dropped, repeated, very long or leaked"
        ]
    return notes


def run_flags(runs: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(task, run) -> what is wrong with a trained run and the config key to change: near chance
    (accuracy under 1.5x the test split's majority share), below the task's tfidf baseline, or
    budget-limited (dev macro-F1 still at its best at the last evaluation, or fewer passes over the
    task data than the default budgets), and an external set S that is tiny beside the task data;
    with the likely cause, told apart by the steps and the task loss's curve: too few steps, the
    learning rate, or too little labelled data for what the model learned."""
    flags = {}
    tfidf = (
        runs[runs["kind"] == "tfidf"].groupby("task").test_macro_f1.mean() if "kind" in runs else {}
    )
    for (task, run), g in runs.groupby(["task", "run"], sort=False):
        if "diagnostics" not in g or g.diagnostics.isna().all():
            continue  # a baseline
        diag = g.diagnostics.tolist()
        stage = diag[0]["stage"]
        f1, acc, chance = (
            g.test_macro_f1.mean(),
            g.test_accuracy.mean(),
            1.5 * g.test_majority_share.mean(),
        )
        rising = sum(d["still_rising"] for d in diag)
        what = []
        if acc <= chance:
            majority = 100 * g.test_majority_share.mean()
            what.append(
                f"near chance (accuracy {100 * acc:.1f}% vs {majority:.1f}% for the most frequent label)"
            )
        elif task in tfidf and f1 < tfidf[task]:
            what.append(
                f"below the tfidf baseline ({100 * f1:.2f} vs {100 * tfidf[task]:.2f} macro-F1)"
            )
        if rising:
            what.append(
                f"budget-limited: dev macro-F1 was at its best at the last evaluation in {rising} of {len(diag)} seeds"
            )
        epochs = (
            pd.DataFrame(g.epochs.tolist()).mean()
            if "epochs" in g and g.epochs.notna().all()
            else pd.Series(dtype=float)
        )
        short = {
            s: e
            for s, e in epochs.items()
            if e < 0.99 * DEFAULT_BUDGET[s]["epochs"]
            and not (s == "stage2" and g.stopped_early.all())
        }
        if short:
            defaults = ", ".join(
                f"{stage} {budget['epochs']} epochs" for stage, budget in DEFAULT_BUDGET.items()
            )
            went = ", ".join(f"{e:.1f} times in {stage}" for stage, e in short.items())
            what.append(
                f"budget-limited: it went over the task data {went} (the default budgets: {defaults})"
            )
            rising = rising or len(short)
        docs, examples = (
            g.external_docs.mean(),
            g.get("train_examples", pd.Series(dtype=float)).mean(),
        )
        if examples and 0 < docs < 2 * examples:
            what.append(
                f"retrieval found little: S holds {docs:.0f} documents for {examples:.0f} training examples "
                f"(see results/report/{task}/retrieval.html: does the corpus cover the task's topic and language? "
                "raise `top_k`, or `query_mode: keywords` for long texts)"
            )
        if not what:
            continue
        start, end = (
            pd.Series([d[k] for d in diag], dtype=float).mean()
            for k in ("task_loss_start", "task_loss_end")
        )
        steps, floor = (min(d.get(k, 0) for d in diag) for k in ("steps", "min_steps"))
        if rising:
            cause = f"likely too few steps: raise `{stage}.epochs` or `{stage}.min_steps` (or max_steps, flops)"
        elif end > 0.8 * start and steps < floor:
            cause = (
                f"likely too few steps: the task loss hardly fell ({start:.2f} to {end:.2f}) in {steps} steps, "
                f"under the default floor of {floor}; drop the stage's budget keys to get the defaults, "
                f"or raise `{stage}.max_steps`"
            )
        elif end > 0.8 * start:
            cause = (
                f"likely the learning rate: the task loss hardly fell ({start:.2f} to {end:.2f}) in {steps} steps; "
                f"try `{stage}.learning_rate` 3x lower or higher"
            )
        elif all(d["best_evaluation"] == 1 for d in diag):
            cause = f"likely the learning rate: dev macro-F1 peaked at the first evaluation; lower `{stage}.learning_rate`"
        else:
            cause = (
                f"likely too little labelled data for what the model learned: the task loss fell ({start:.2f} to {end:.2f}) "
                "but dev macro-F1 stopped improving; label more examples, or change how much external data it "
                "learns from: a larger `top_k` where tlm beats task_only, a smaller one (or `stage1.rho1`) where not"
            )
        flags[(task, run)] = "; ".join(what) + f". {cause}."
    return flags
