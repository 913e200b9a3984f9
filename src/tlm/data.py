"""Task data T: loading and validation, labels, tokenized batches and BERT's MLM masking."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from tlm.io import TLMInputError, atomic_path

SPLITS = ("train", "dev", "test")
LONG_WORDS = 512  # a task text longer than this is "very long" (BERT's longest input is 512 tokens)


TABLE_FORMATS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
}


def table_format(path: Path) -> str:
    """parquet, csv, tsv or jsonl, from the file's name; a missing file or another format is named."""
    if not path.exists():
        raise TLMInputError(f"{path}: file not found. Fix: correct the path in the config's `tasks` section.")
    if path.is_file() and path.stat().st_size == 0:
        raise TLMInputError(f"{path}: the file is empty. Fix: give a file with a header and rows, or remove it from the config.")
    for ext, fmt in TABLE_FORMATS.items():
        if path.name.lower().endswith(ext):
            return fmt
    raise TLMInputError(f"{path}: unknown format. Fix: use .parquet, .csv, .tsv or .jsonl (.gz allowed but for Parquet).")


def _missing_columns(path, columns, found) -> None:
    missing = [c for c in columns if c not in found]
    if missing:
        raise TLMInputError(
            f"{path}: missing column(s) {missing} (found {list(found)}). "
            "Fix: rename the columns or set `text_column` / `label_column` for this task in the config."
        )


def _readers(path: Path, chunk_rows: int | None, skip_blank_lines: bool = True):
    """pandas' readers of each format, as strings; with chunk_rows, iterators of frames."""
    text = dict(dtype=str, keep_default_na=False, chunksize=chunk_rows, skip_blank_lines=skip_blank_lines)
    return {
        "parquet": lambda: pd.read_parquet(path),
        "csv": lambda: pd.read_csv(path, **text),
        "tsv": lambda: pd.read_csv(path, sep="\t", quoting=3, **text),
        "jsonl": lambda: pd.read_json(path, lines=True, dtype=False, chunksize=chunk_rows),
    }


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a task file (.parquet, .csv, .tsv, .jsonl) with a clear error for a bad or missing file."""
    path = Path(path)
    fmt = table_format(path)
    try:
        df = _readers(path, None)[fmt]()
    except Exception as e:  # pandas/pyarrow errors are opaque to a user; name the file instead
        raise _read_error(path, e) from None
    _missing_columns(path, columns or [], df.columns)
    return df


def read_column_chunks(path: str | Path, column: str, rows: int = 32_768) -> Iterator[list[str]]:
    """One column of a task-format file as lists of at most `rows` strings, streamed: memory is
    bounded by a chunk, whatever the file's size. Every row is kept, blank ones as "" (a blank line
    of a CSV/TSV or JSON lines file is a row), so a text's position is its row in the file."""
    path = Path(path)
    fmt = table_format(path)
    try:
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            _missing_columns(path, [column], pf.schema_arrow.names)
            chunks = (batch.column(0) for batch in pf.iter_batches(batch_size=rows, columns=[column]))
            yield from ([("" if t is None else str(t)) for t in chunk.to_pylist()] for chunk in chunks)
            return
        if fmt == "jsonl":
            yield from _jsonl_column_chunks(path, column, rows)
            return
        for frame in _readers(path, rows, skip_blank_lines=False)[fmt]():
            _missing_columns(path, [column], frame.columns)
            yield frame[column].fillna("").astype(str).tolist()
    except (TLMInputError, GeneratorExit):
        raise
    except Exception as e:
        raise _read_error(path, e) from None


def _read_error(path: Path, e: Exception) -> TLMInputError:
    if isinstance(e, ValueError) and not isinstance(e, UnicodeDecodeError) and table_format(path) == "jsonl":
        with open(path, encoding="utf-8", errors="replace") as f:  # pandas names a byte offset, not the line
            for number, line in enumerate(f, 1):
                try:
                    json.loads(line) if line.strip() else None
                except json.JSONDecodeError as bad:
                    return TLMInputError(f"{path}, line {number}: not JSON ({bad.msg}). Fix: one JSON object per line.")
    if isinstance(e, UnicodeDecodeError):  # e.g. a CSV saved as Latin-1 or Windows-1252
        return TLMInputError(
            f"{path}: not UTF-8 text ({_first_bad_utf8(path)}). "
            f"Fix: save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}`)."
        )
    return TLMInputError(f"{path}: could not be read ({type(e).__name__}: {e}). Fix: check the file's format.")


def _jsonl_column_chunks(path: Path, column: str, rows: int) -> Iterator[list[str]]:
    """JSON lines, one row per line (pandas skips blank lines, which would shift the rows after them)."""
    chunk, found, keys = [], False, None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TLMInputError(f"{path}, line {number}: not JSON ({e.msg}). Fix: one JSON object per line.") from None
                if not isinstance(record, dict):
                    raise TLMInputError(f"{path}, line {number}: not a JSON object. Fix: one JSON object per line.")
                found, keys = found or column in record, keys or list(record)
                value = record.get(column)
                chunk.append("" if value is None else str(value))
            else:
                chunk.append("")
            if len(chunk) == rows:
                yield chunk
                chunk = []
    if chunk and not found:
        _missing_columns(path, [column], keys or [])
    if chunk:
        yield chunk


def _first_bad_utf8(path: Path) -> str:
    """Where a file stops being UTF-8: its line and byte (pandas' error gives an offset into a buffer)."""
    with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                return f"line {number}: byte {line[bad.start : bad.start + 1].hex()}"
    return "an invalid byte"


def _as_text(column: pd.Series) -> pd.Series:
    """A column as stripped strings, missing values as "". Whole floats are written as integers: a
    split with a missing label stores its integer labels as floats (1.0), which must match 1."""
    whole = column.dropna()
    if pd.api.types.is_float_dtype(column) and ((whole % 1 == 0) & (whole.abs() < 2**53)).all():
        column = column.astype("Int64")
    return column.astype(object).where(column.notna(), "").astype(str).str.strip()


def load_task(
    paths: dict[str, str], text_column: str = "text", label_column: str = "label"
) -> tuple[dict[str, pd.DataFrame], list[str], dict]:
    """Validate the three splits of a task; return them as (text, label) frames, the sorted label
    set, and what was found in them: per split the rows read, those dropped for an empty text or
    label, repeated texts, the texts' length in words (median, 90th percentile, longest) and how
    many are very long (over LONG_WORDS), and the texts of dev or test also in train, or of test
    also in dev (leakage)."""
    splits, report = {}, {}
    for split in SPLITS:
        df = read_table(paths[split], [text_column, label_column])
        df = pd.DataFrame({c: _as_text(df[col]) for c, col in (("text", text_column), ("label", label_column))})
        keep = (df["text"] != "") & (df["label"] != "")
        report[split] = {
            "rows": len(df),
            "empty_text_dropped": int((df["text"] == "").sum()),
            "empty_label_dropped": int(((df["label"] == "") & (df["text"] != "")).sum()),
        }
        df = df[keep].reset_index(drop=True)
        if df.empty:
            raise TLMInputError(f"{paths[split]}: no rows with text and label. Fix: give a non-empty {split} split.")
        words = df["text"].str.count(r"\s+") + 1
        report[split] |= {
            "kept": len(df),
            "repeated_texts": int(df["text"].duplicated().sum()),
            "words_median": float(words.median()),
            "words_p90": float(words.quantile(0.9)),
            "words_max": int(words.max()),
            "very_long": int((words > LONG_WORDS).sum()),
        }
        splits[split] = df
    texts = {split: set(df["text"]) for split, df in splits.items()}
    report["leakage"] = {
        "dev_in_train": len(texts["dev"] & texts["train"]),
        "test_in_train": len(texts["test"] & texts["train"]),
        "test_in_dev": len(texts["test"] & texts["dev"]),
    }
    labels = sorted(splits["train"]["label"].unique())
    if len(labels) < 2:
        raise TLMInputError(
            f"{paths['train']}: only {len(labels)} distinct label(s). Fix: a classification task needs >= 2 labels."
        )
    for split in ("dev", "test"):
        unknown = sorted(set(splits[split]["label"]) - set(labels))
        if unknown:
            raise TLMInputError(
                f"{paths[split]}: labels not seen in train: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}. "
                "Fix: drop those rows or add training examples for them (a model cannot predict unseen labels)."
            )
    return splits, labels, report


def hygiene_notes(task: str, report: dict) -> list[str]:
    """What a user should hear of a task's data (summary, prepare_task's log): drops, repeats,
    long texts and, first, leakage between the splits."""
    notes = []
    leak = report["leakage"]
    if any(leak.values()):
        notes.append(
            f"LEAKAGE: {leak['test_in_train']} test and {leak['dev_in_train']} dev texts also in train, "
            f"{leak['test_in_dev']} test texts also in dev: scores on them overstate the model. "
            "Fix: remove them from dev/test (or from train)"
        )
    for split in SPLITS:
        r = report[split]
        parts = [
            f"{r[k]} {what}"
            for k, what in (
                ("empty_text_dropped", "dropped for an empty text"),
                ("empty_label_dropped", "dropped for an empty label"),
                ("repeated_texts", "repeated texts"),
            )
            if r[k]
        ]
        if r["very_long"]:
            parts.append(
                f"{r['very_long']} texts of more than {LONG_WORDS} words (90% have at most {r['words_p90']:.0f}; "
                "texts are cut at max_seq_length tokens)"
            )
        if parts:
            notes.append(f"{split}: {r['rows']} rows, " + ", ".join(parts))
    return [f"{task}: {note}" for note in notes]


class TokenStore:
    """Token ids of many texts, flat on disk (ids.npy int32, offsets.npy int64, optional labels.npy)
    and memory-mapped on load, so training streams a large external corpus instead of holding it."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray | None = None):
        self.ids, self.offsets, self.labels = ids, offsets, labels

    @classmethod
    def from_texts(cls, tokenizer, texts, max_seq_length: int, labels=None, chunk: int = 20_000) -> TokenStore:
        texts = list(texts)
        parts, lengths = [], []
        for start in range(0, len(texts), chunk):
            enc = tokenizer(texts[start : start + chunk], truncation=True, max_length=max_seq_length)["input_ids"]
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


class Batches:
    """Batches of a TokenStore, dynamically padded to their longest row, reshuffled every epoch.

    With `bucket` > 0, each run of `bucket` batches' worth of examples is sorted by length before it
    is cut into batches (whose order is then shuffled): little padding, still random batches.
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
            lengths = self.store.lengths
            span = self.bucket * self.batch_size
            order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in np.split(order, range(span, n, span))])
        if self.pack:
            order = self._packed(order)
            n = len(order)
        plan = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.shuffle and self.bucket:
            plan = [plan[i] for i in self.rng.permutation(len(plan))]
        return plan

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

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "plan": self.plan, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.plan, self.pos = state["plan"], state["pos"]

    def collate(self, idx) -> dict[str, torch.Tensor]:
        if self.pack:  # [CLS] a [SEP] b [SEP] ...: the first example whole, the others without their [CLS]
            rows = [np.concatenate([self.store.row(r[0]), *(self.store.row(i)[1:] for i in r[1:])]) for r in idx]
        else:
            rows = [self.store.row(i) for i in idx]
        if self.max_len:  # a run may use a shorter max_seq_length than the cached tokens: keep [SEP] last
            rows = [np.append(r[: self.max_len - 1], self.sep_id) if len(r) > self.max_len else r for r in rows]
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
    to_random = picked & ~to_mask & torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    input_ids[to_random] = torch.randint(vocab_size, input_ids.shape, generator=generator)[to_random]
    return input_ids, labels
