"""What stage 1 did to a pretrained encoder, without stage 2's budget in the way: a logistic-regression
probe on frozen mean-pooled encodings, fitted on a task's train split and scored on its dev split
(macro-F1), for the checkpoint and for each run's stage-1 encoder.

    python benchmarks/plm_tlm/probe.py TASK RUN [RUN ...]     (in the workflow directory)

Reads results/tasks/TASK/{train,dev}.parquet and labels.json, the runs' config (results/models/TASK/RUN/seed0/stage1)
and the checkpoint they started from (settings.pretrained); prints a Markdown table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, AutoTokenizer

from tlm.config import pretrained_dir
from tlm.evaluate import markdown_table
from tlm.metrics import classification_metrics


@torch.no_grad()
def encode(model_dir, texts: list[str], max_len: int) -> torch.Tensor:
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    out = []
    for i in range(0, len(texts), 64):
        batch = tok(
            texts[i : i + 64],
            truncation=True,
            max_length=max_len,
            padding=True,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)
        out.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out).numpy()


def main() -> None:
    task, runs = sys.argv[1], sys.argv[2:]
    splits = {s: pd.read_parquet(f"results/tasks/{task}/{s}.parquet") for s in ("train", "dev")}
    labels = json.loads(Path(f"results/tasks/{task}/labels.json").read_text())["labels"]
    y = {
        s: splits[s].label.map({label: i for i, label in enumerate(labels)}).to_numpy()
        for s in splits
    }
    first = json.loads(
        Path(f"results/models/{task}/{runs[0]}/seed0/stage1/train_result.json").read_text()
    )["settings"]
    models = {"checkpoint": pretrained_dir(first["pretrained"])} | {
        r: f"results/models/{task}/{r}/seed0/stage1" for r in runs
    }
    rows = []
    for name, path in models.items():
        x = {
            s: encode(path, splits[s].text.tolist(), first["model"]["max_seq_length"])
            for s in splits
        }
        probe = LogisticRegression(max_iter=2000).fit(x["train"], y["train"])
        f1 = classification_metrics(y["dev"], probe.predict(x["dev"]), len(labels))["macro_f1"]
        rows.append({"encoder": name, "probe dev macro-F1": f"{100 * f1:.2f}"})
    print(markdown_table(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
