"""Task data T: loading and validation, labels, tokenized batches and BERT's MLM masking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tlm.io import TLMInputError

SPLITS = ("train", "dev", "test")


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a task file (.parquet, .csv, .tsv, .jsonl) with a clear error for a bad or missing file."""
    path = Path(path)
    if not path.exists():
        raise TLMInputError(f"{path}: file not found. Fix: correct the path in the config's `tasks` section.")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            df = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz")):
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif name.endswith((".tsv", ".tsv.gz")):
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
        elif name.endswith((".jsonl", ".jsonl.gz")):
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            raise TLMInputError(f"{path}: unknown format. Fix: use .parquet, .csv, .tsv or .jsonl.")
    except TLMInputError:
        raise
    except Exception as e:  # pandas/pyarrow errors are opaque to a user; name the file instead
        raise TLMInputError(f"{path}: could not be read ({type(e).__name__}: {e}). Fix: check the file's format.") from None
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise TLMInputError(
                f"{path}: missing column(s) {missing} (found {list(df.columns)}). "
                "Fix: rename the columns or set `text_column` / `label_column` for this task in the config."
            )
    return df


def load_task(paths: dict[str, str], text_column: str = "text", label_column: str = "label") -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Validate the three splits of a task; return them as (text, label) frames and the sorted label set."""
    splits = {}
    for split in SPLITS:
        df = read_table(paths[split], [text_column, label_column])
        df = pd.DataFrame({"text": df[text_column].astype(str).str.strip(), "label": df[label_column].astype(str).str.strip()})
        df = df[df["text"] != ""].reset_index(drop=True)
        if df.empty:
            raise TLMInputError(f"{paths[split]}: no rows with text. Fix: give a non-empty {split} split.")
        splits[split] = df
    labels = sorted(splits["train"]["label"].unique())
    if len(labels) < 2:
        raise TLMInputError(f"{paths['train']}: only {len(labels)} distinct label(s). Fix: a classification task needs >= 2 labels.")
    for split in ("dev", "test"):
        unknown = sorted(set(splits[split]["label"]) - set(labels))
        if unknown:
            raise TLMInputError(
                f"{paths[split]}: labels not seen in train: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}. "
                "Fix: drop those rows or add training examples for them (a model cannot predict unseen labels)."
            )
    return splits, labels


class Batches:
    """An endless stream of dynamically padded batches from token id lists, reshuffled each epoch."""

    def __init__(self, ids: list[list[int]], labels: np.ndarray | None, batch_size: int, pad_id: int, seed: int, shuffle: bool = True):
        if not ids:
            raise ValueError("no examples to batch")
        self.ids, self.labels, self.batch_size, self.pad_id = ids, labels, batch_size, pad_id
        self.rng = np.random.default_rng(seed)
        self.shuffle = shuffle

    def epoch(self):
        order = self.rng.permutation(len(self.ids)) if self.shuffle else np.arange(len(self.ids))
        for start in range(0, len(order), self.batch_size):
            yield self.collate(order[start : start + self.batch_size])

    def __iter__(self):
        while True:
            yield from self.epoch()

    def collate(self, idx) -> dict[str, torch.Tensor]:
        rows = [self.ids[i] for i in idx]
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)] = torch.as_tensor(row)
        batch = {"input_ids": input_ids, "attention_mask": (input_ids != self.pad_id).long()}
        if self.labels is not None:
            batch["labels"] = torch.as_tensor(self.labels[idx], dtype=torch.long)
        return batch


def mask_tokens(
    input_ids: torch.Tensor,
    special_tokens_mask: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick `mlm_probability` of the non-special tokens; of those 80% -> [MASK],
    10% -> a random token, 10% unchanged. Returns (masked input ids, labels with -100 elsewhere)."""
    input_ids = input_ids.clone()
    labels = input_ids.clone()
    probs = torch.full(input_ids.shape, mlm_probability)
    probs.masked_fill_(special_tokens_mask.bool(), 0.0)
    picked = torch.bernoulli(probs, generator=generator).bool()
    labels[~picked] = -100
    to_mask = picked & torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool()
    input_ids[to_mask] = mask_token_id
    to_random = picked & ~to_mask & torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    input_ids[to_random] = torch.randint(vocab_size, input_ids.shape, generator=generator)[to_random]
    return input_ids, labels
