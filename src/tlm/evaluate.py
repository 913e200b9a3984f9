"""Test-set quality of a trained run next to what it cost, and the summary table of all runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tlm.data import Batches, TokenStore
from tlm.io import atomic_path, read_json
from tlm.metrics import classification_metrics, paper_flops
from tlm.model import TLMModel, count_parameters
from tlm.select import external_size
from tlm.train import amp_dtype, load_tokenizer, pick_device, predict


def evaluate_run(stage1_dir, stage2_dir, tokens_dir, external_paths: list, precision: str = "auto") -> dict:
    stage2_dir = Path(stage2_dir)
    device = pick_device()
    tokenizer = load_tokenizer(stage2_dir)
    model = TLMModel.from_pretrained(stage2_dir).to(device)
    test = TokenStore.load(tokens_dir)
    batches = Batches(test, 256, tokenizer.pad_token_id, seed=0, shuffle=False,
                      max_len=model.config.max_position_embeddings, sep_id=tokenizer.sep_token_id)
    preds = predict(model, batches, device, amp_dtype(precision, device))
    scores = classification_metrics(test.labels, preds, model.config.num_labels)

    stages = {name: read_json(Path(d) / "train_result.json") for name, d in (("stage1", stage1_dir), ("stage2", stage2_dir))}
    params = count_parameters(model)
    tokens = sum(s["tokens"] for s in stages.values())
    external_docs, external_bytes = external_size(external_paths)
    return {
        **{f"test_{k}": v for k, v in scores.items()},
        "dev_macro_f1": stages["stage2"]["dev"].get("macro_f1"),
        "parameters": params["total"],
        "train_flops": sum(s["flops"] for s in stages.values()),
        "train_flops_6nd": paper_flops(params["total"], tokens),
        "train_tokens": tokens,
        "train_seconds": sum(s["seconds"] for s in stages.values()),
        "stage1_steps": stages["stage1"]["steps"],
        "stage1_external_steps": stages["stage1"]["external_steps"],
        "stage2_steps": stages["stage2"]["steps"],
        "stage2_best_step": stages["stage2"]["best_step"],
        "external_docs": external_docs,
        "external_bytes": external_bytes,
        "device": stages["stage1"]["device"],
        "test_examples": len(test),
    }


SUMMARY_COLUMNS = {
    "task": "task", "run": "run", "test_accuracy": "accuracy", "test_macro_f1": "macro-F1", "test_micro_f1": "micro-F1",
    "dev_macro_f1": "dev macro-F1", "train_flops": "train FLOPs", "train_tokens": "tokens", "external_docs": "S docs",
    "external_bytes": "S bytes", "train_seconds": "train s", "device": "device",
}


def markdown_table(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summarize(metric_paths: list, md_path, csv_path) -> pd.DataFrame:
    rows = []
    for path in metric_paths:
        path = Path(path)
        rows.append({"task": path.parent.name, "run": path.stem, **read_json(path)})
    table = pd.DataFrame(rows)[list(SUMMARY_COLUMNS)]
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    shown = table.rename(columns=SUMMARY_COLUMNS)
    for col in ("accuracy", "macro-F1", "micro-F1", "dev macro-F1"):
        shown[col] = (100 * shown[col]).map("{:.2f}".format)
    shown["train FLOPs"] = shown["train FLOPs"].map("{:.2e}".format)
    shown["train s"] = shown["train s"].map("{:.0f}".format)
    text = "# TLM results (test split; F1 and accuracy in %)\n\n" + markdown_table(shown)
    with atomic_path(md_path) as tmp:
        tmp.write_text(text)
    return table
