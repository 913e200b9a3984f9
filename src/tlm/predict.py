"""Predictions of a trained model on new texts: files of any size, streamed in chunks.

The model is loaded as plain transformers loads it (AutoModelForSequenceClassification and the
tokenizer saved beside it), texts are cut at the length the model was trained on, and each chunk is
sorted by length before it is cut into batches, so batches carry little padding. Memory is bounded
by one chunk, whatever the size of the files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import pyarrow.parquet as pq

from tlm.data import read_column_chunks
from tlm.inference import load_model, predict_texts, probabilities
from tlm.io import TLMInputError, arrow_table, atomic_path

log = logging.getLogger(__name__)


def predict_files(
    model_dir,
    paths: list[str],
    text_column: str,
    out_path,
    batch_size: int = 128,
    chunk_rows: int = 32_768,
    precision: str = "auto",
) -> int:
    """Predict every text of `paths` (task-format files, `text_column`) into one Parquet file:
    file, row (within its file), label (the predicted one) and prob_<label> per label. Every row of
    a file is kept in its place: an empty or whitespace-only text gets a null label and null
    probabilities (nothing to classify). Returns the number of texts."""
    model, tokenizer, device, dtype = load_model(model_dir, precision)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    total, blanks, start = 0, 0, time.perf_counter()
    with atomic_path(out_path) as tmp:
        writer = None
        for path, first_row, texts in _chunks(paths, text_column, chunk_rows):
            blank = np.array([not t.strip() for t in texts])
            probs = np.full((len(texts), len(labels)), np.nan, np.float32)
            if not blank.all():
                kept = [t for t, b in zip(texts, blank) if not b]
                probs[~blank] = predict_texts(model, tokenizer, kept, device, dtype, batch_size)
            frame = probabilities(probs, labels)
            frame.loc[blank, "label"] = None
            blanks += int(blank.sum())
            frame.insert(0, "file", path)
            frame.insert(1, "row", np.arange(first_row, first_row + len(texts), dtype=np.int64))
            table = arrow_table(frame)
            writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
            total += len(texts)
            log.info("%d texts, %.0f texts/s", total, total / (time.perf_counter() - start))
        writer.close()
    if blanks:
        log.warning(
            "%d of %d texts are empty or whitespace only: their label is null", blanks, total
        )
    return total


def _chunks(paths: list[str], column: str, rows: int) -> Iterator[tuple[str, int, list[str]]]:
    for path in paths:
        seen = 0
        for texts in read_column_chunks(path, column, rows):
            yield str(path), seen, texts
            seen += len(texts)
        if seen == 0:
            raise TLMInputError(
                f"{path}: no rows to predict. Fix: give a file with texts, or remove it from `tasks.*.predict`."
            )
    if not paths:
        raise TLMInputError(
            "tasks.*.predict: no files given. Fix: list the files whose texts to predict."
        )
