"""Task data T: reading task files of any format, validation, labels and hygiene notes."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tlm.io import TLMInputError

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
        raise TLMInputError(
            f"{path}: file not found. Fix: correct the path in the config's `tasks` section."
        )
    if path.is_file() and path.stat().st_size == 0:
        raise TLMInputError(
            f"{path}: the file is empty. Fix: give a file with a header and rows, or remove it from the config."
        )
    for ext, fmt in TABLE_FORMATS.items():
        if path.name.lower().endswith(ext):
            return fmt
    raise TLMInputError(
        f"{path}: unknown format. Fix: use .parquet, .csv, .tsv or .jsonl (.gz allowed but for Parquet)."
    )


def _missing_columns(path, columns, found) -> None:
    missing = [c for c in columns if c not in found]
    if missing:
        raise TLMInputError(
            f"{path}: missing column(s) {missing} (found {list(found)}). "
            "Fix: rename the columns or set `text_column` / `label_column` for this task in the config."
        )


def _readers(path: Path, chunk_rows: int | None, skip_blank_lines: bool = True):
    """pandas' readers of each format, as strings; with chunk_rows, iterators of frames."""
    text = dict(
        dtype=str, keep_default_na=False, chunksize=chunk_rows, skip_blank_lines=skip_blank_lines
    )
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
            chunks = (
                batch.column(0) for batch in pf.iter_batches(batch_size=rows, columns=[column])
            )
            yield from (
                [("" if t is None else str(t)) for t in chunk.to_pylist()] for chunk in chunks
            )
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
    if (
        isinstance(e, ValueError)
        and not isinstance(e, UnicodeDecodeError)
        and table_format(path) == "jsonl"
    ):
        with open(
            path, encoding="utf-8", errors="replace"
        ) as f:  # pandas names a byte offset, not the line
            for number, line in enumerate(f, 1):
                try:
                    json.loads(line) if line.strip() else None
                except json.JSONDecodeError as bad:
                    return TLMInputError(
                        f"{path}, line {number}: not JSON ({bad.msg}). Fix: one JSON object per line."
                    )
    if isinstance(e, UnicodeDecodeError):  # e.g. a CSV saved as Latin-1 or Windows-1252
        return TLMInputError(
            f"{path}: not UTF-8 text ({_first_bad_utf8(path)}). "
            f"Fix: save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}`)."
        )
    return TLMInputError(
        f"{path}: could not be read ({type(e).__name__}: {e}). Fix: check the file's format."
    )


def _jsonl_column_chunks(path: Path, column: str, rows: int) -> Iterator[list[str]]:
    """JSON lines, one row per line (pandas skips blank lines, which would shift the rows after them)."""
    chunk, found, keys = [], False, None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TLMInputError(
                        f"{path}, line {number}: not JSON ({e.msg}). Fix: one JSON object per line."
                    ) from None
                if not isinstance(record, dict):
                    raise TLMInputError(
                        f"{path}, line {number}: not a JSON object. Fix: one JSON object per line."
                    )
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


# What a spreadsheet or R writes for a missing value: a cell reading so is kept as text (NA can be
# a real label), and counted in the hygiene report.
MISSING_MARKERS = ("na", "n/a", "nan", "null", "none")


def _as_text(column: pd.Series, path, name: str) -> pd.Series:
    """A column as stripped strings, missing values as "". Whole floats are written as integers: a
    split with a missing label stores its integer labels as floats (1.0), which must match 1 (also
    in a column of mixed types, as JSON lines give). A list or mapping in a cell is refused."""
    whole = column.dropna()
    if pd.api.types.is_float_dtype(column) and ((whole % 1 == 0) & (whole.abs() < 2**53)).all():
        column = column.astype("Int64")
    elif column.dtype == object:
        nested = whole[whole.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray)))]
        if len(nested):
            raise TLMInputError(
                f"{path}: column '{name}' holds a {type(nested.iloc[0]).__name__} in row "
                f"{nested.index[0] + 1} ({str(nested.iloc[0])[:60]}), not one value. Fix: give one "
                "text and one label per row (tlm trains single-label classification: for several "
                "labels per row, repeat the row once per label or join them into one label name)."
            )
        column = column.map(
            lambda v: int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v
        )
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
        df = pd.DataFrame(
            {
                c: _as_text(df[col], paths[split], col)
                for c, col in (("text", text_column), ("label", label_column))
            }
        )
        keep = (df["text"] != "") & (df["label"] != "")
        report[split] = {
            "rows": len(df),
            "empty_text_dropped": int((df["text"] == "").sum()),
            "empty_label_dropped": int(((df["label"] == "") & (df["text"] != "")).sum()),
        }
        df = df[keep].reset_index(drop=True)
        if df.empty:
            raise TLMInputError(
                f"{paths[split]}: no rows with text and label. Fix: give a non-empty {split} split."
            )
        words = df["text"].str.count(r"\s+") + 1
        report[split] |= {
            "kept": len(df),
            "missing_markers": int(
                (
                    df["text"].str.lower().isin(MISSING_MARKERS)
                    | df["label"].str.lower().isin(MISSING_MARKERS)
                ).sum()
            ),
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
        if r.get("missing_markers"):
            parts.append(
                f"{r['missing_markers']} texts or labels that read NA, NaN, null or None, kept as those words "
                "(Fix: leave a missing value's cell empty, or drop the row)"
            )
        if r["very_long"]:
            parts.append(
                f"{r['very_long']} texts of more than {LONG_WORDS} words (90% have at most {r['words_p90']:.0f}; "
                "texts are cut at max_seq_length tokens)"
            )
        if parts:
            notes.append(f"{split}: {r['rows']} rows, " + ", ".join(parts))
    return [f"{task}: {note}" for note in notes]
