"""Tokenized texts: stored flat on disk and memory-mapped (`TokenStore`), drawn as padded training
batches (`Batches`), and BERT's MLM masking (`mask_tokens`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tlm.io import atomic_path


class TokenStore:
    """Token ids of many texts, flat on disk (ids.npy int32, offsets.npy int64, optional labels.npy)
    and memory-mapped on load, so training streams a large external corpus instead of holding it."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray | None = None):
        self.ids, self.offsets, self.labels = ids, offsets, labels

    @classmethod
    def from_texts(
        cls, tokenizer, texts, max_seq_length: int, labels=None, chunk: int = 20_000
    ) -> TokenStore:
        texts = list(texts)
        parts, lengths = [], []
        for start in range(0, len(texts), chunk):
            enc = tokenizer(
                texts[start : start + chunk], truncation=True, max_length=max_seq_length
            )["input_ids"]
            parts.extend(np.asarray(row, dtype=np.int32) for row in enc)
            lengths.extend(map(len, enc))
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(ids, offsets, None if labels is None else np.asarray(labels, dtype=np.int64))

    def save(self, out_dir) -> None:
        with atomic_path(out_dir, is_dir=True) as tmp:
            tmp.mkdir()
            np.save(tmp / "ids.npy", self.ids)
            np.save(tmp / "offsets.npy", self.offsets)
            if self.labels is not None:
                np.save(tmp / "labels.npy", self.labels)

    @classmethod
    def load(cls, path) -> TokenStore:
        path = Path(path)
        labels = np.load(path / "labels.npy") if (path / "labels.npy").exists() else None
        return cls(np.load(path / "ids.npy", mmap_mode="r"), np.load(path / "offsets.npy"), labels)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


# Training batches are sorted by length in spans of this many batches (then shuffled); evaluation
# batches in spans of EVAL_BUCKET (then put back in order).
TRAIN_BUCKET = 50
EVAL_BUCKET = 16


class Batches:
    """Batches of a TokenStore, dynamically padded to their longest row, reshuffled every epoch.

    With `bucket` > 0, each run of `bucket` batches' worth of examples is sorted by length before it
    is cut into batches (whose order is then shuffled): little padding, still random batches. When
    training on labelled examples, the sort is by length *within each label* (a row's rank among
    its label's rows, as a share, jittered by a batch's worth): text length often goes with the
    label, and a batch of only the shortest texts would be a batch of a few classes; this way each
    batch holds the labels in their usual proportions. Without shuffling (evaluation) the sort is
    by length alone; `in_store_order` puts results back in the store's order.
    With `pack`, the rows are filled with several examples each, up to `max_len` tokens ([CLS], then
    every example's tokens with its [SEP]), as RoBERTa packs its MLM data: fewer, fuller rows and
    next to no padding (for the external MLM batches; a row then mixes documents). With
    `pad_multiple`, rows are padded to a multiple of it (fewer distinct shapes for torch.compile).
    `next()` draws the next training batch; its position is part of state_dict() so a resumed run
    sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        store: TokenStore,
        batch_size: int,
        pad_id: int,
        seed: int,
        shuffle: bool = True,
        bucket: int = 0,
        max_len: int | None = None,
        sep_id: int | None = None,
        pack: bool = False,
        pad_multiple: int = 1,
    ):
        if len(store) == 0:
            raise ValueError("no examples to batch")
        if pack and not max_len:
            raise ValueError("packing needs max_len")
        self.store, self.batch_size, self.pad_id = store, batch_size, pad_id
        self.shuffle, self.bucket, self.max_len, self.sep_id = shuffle, bucket, max_len, sep_id
        self.pack, self.pad_multiple = pack, pad_multiple
        self.rng = np.random.default_rng(seed)
        self.plan: list[np.ndarray] = []
        self.pos = 0

    def _plan_epoch(self) -> list[np.ndarray]:
        n = len(self.store)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            span = self.bucket * self.batch_size
            order = np.concatenate(
                [self._by_length(c) for c in np.split(order, range(span, n, span))]
            )
        if self.pack:
            order = self._packed(order)
            n = len(order)
        plan = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.shuffle and self.bucket:
            plan = [plan[i] for i in self.rng.permutation(len(plan))]
        return plan

    def _by_length(self, rows: np.ndarray) -> np.ndarray:
        """`rows` longest first; labelled rows in training by their length's rank within the label."""
        lengths = self.store.lengths[rows]
        if self.store.labels is None or not self.shuffle:
            return rows[np.argsort(-lengths, kind="stable")]
        labels = self.store.labels[rows]
        key = np.empty(len(rows))
        for label in np.unique(labels):
            at = np.flatnonzero(labels == label)
            key[at[np.argsort(-lengths[at], kind="stable")]] = (np.arange(len(at)) + 0.5) / len(at)
        key += self.rng.uniform(0, self.batch_size / len(rows), len(rows))
        return rows[np.argsort(key, kind="stable")]

    def _packed(self, order: np.ndarray) -> list[np.ndarray]:
        """`order` cut greedily into rows of at most max_len tokens (an example adds its length
        less its [CLS]); an example longer than that alone is a row of its own."""
        cost = self.store.lengths[order] - 1
        rows, start, used = [], 0, 1
        for j, c in enumerate(cost):
            if used + c > self.max_len and j > start:
                rows.append(order[start:j])
                start, used = j, 1
            used += c
        rows.append(order[start:])
        return rows

    def next(self) -> dict[str, torch.Tensor]:
        if self.pos == len(self.plan):
            self.plan, self.pos = self._plan_epoch(), 0
        self.pos += 1
        return self.collate(self.plan[self.pos - 1])

    def epoch(self):
        """One pass in the planned order, independent of next()'s position (for evaluation)."""
        for idx in self._plan_epoch():
            yield self.collate(idx)

    def in_store_order(self, values: np.ndarray) -> np.ndarray:
        """`values` (one row per example, in epoch()'s order; no shuffling) in the store's order."""
        if self.shuffle:
            raise ValueError("a shuffled epoch has no fixed order")
        out = np.empty_like(values)
        out[np.concatenate(self._plan_epoch())] = values
        return out

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "plan": self.plan, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.plan, self.pos = state["plan"], state["pos"]

    def collate(self, idx) -> dict[str, torch.Tensor]:
        if (
            self.pack
        ):  # [CLS] a [SEP] b [SEP] ...: the first example whole, the others without their [CLS]
            rows = [
                np.concatenate([self.store.row(r[0]), *(self.store.row(i)[1:] for i in r[1:])])
                for r in idx
            ]
        else:
            rows = [self.store.row(i) for i in idx]
        if (
            self.max_len
        ):  # a run may use a shorter max_seq_length than the cached tokens: keep [SEP] last
            rows = [
                np.append(r[: self.max_len - 1], self.sep_id) if len(r) > self.max_len else r
                for r in rows
            ]
        width = -(-max(map(len, rows)) // self.pad_multiple) * self.pad_multiple
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)] = torch.from_numpy(row.astype(np.int64))
        batch = {"input_ids": input_ids, "attention_mask": (input_ids != self.pad_id).long()}
        if self.store.labels is not None and not self.pack:
            batch["labels"] = torch.as_tensor(self.store.labels[idx], dtype=torch.long)
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
    to_random = (
        picked
        & ~to_mask
        & torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    )
    input_ids[to_random] = torch.randint(vocab_size, input_ids.shape, generator=generator)[
        to_random
    ]
    return input_ids, labels
