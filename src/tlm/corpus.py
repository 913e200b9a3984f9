"""Read a user's general corpus D (any size) as a stream and cut it into Parquet shards.

Memory stays bounded by one shard: documents are read in batches, written to the current shard's
Parquet writer and forgotten. Document ids are global, dense and stable: the i-th kept document of
the inputs (in the order given) gets doc_id i, so the same inputs always give the same ids.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tlm.io import TLMInputError, atomic_path, write_json

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema([("doc_id", pa.int64()), ("text", pa.string())])
FORMATS = (".parquet", ".jsonl", ".jsonl.gz", ".txt", ".txt.gz")


@dataclass
class CorpusCounts:
    documents: int = 0
    empty_skipped: int = 0
    bad_utf8_skipped: int = 0
    duplicates_skipped: int = 0
    shards: int = 0


def corpus_format(path: str | Path) -> str:
    name = str(path).lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    raise TLMInputError(
        f"{path}: unknown corpus format. Fix: give files ending in {', '.join(FORMATS)} "
        "(JSON lines with a text field, Parquet with a text column, or plain text with one "
        "document per line)."
    )


def _lines(path: Path, counts: CorpusCounts) -> Iterator[tuple[int, str]]:
    """Decoded lines of a (possibly gzipped) text file; lines with invalid UTF-8 are counted and skipped."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError:
                counts.bad_utf8_skipped += 1


def iter_texts(path: str | Path, text_field: str, counts: CorpusCounts, batch_size: int = 10_000) -> Iterator[str]:
    """Yield the raw text of every document in one corpus file, streaming."""
    path = Path(path)
    if not path.exists():
        raise TLMInputError(f"{path}: corpus file not found. Fix: correct `corpus.paths` in the config.")
    fmt = corpus_format(path)
    if fmt == ".parquet":
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise TLMInputError(f"{path}: not a readable Parquet file ({e}). Fix: rewrite or remove the file.") from None
        if text_field not in pf.schema_arrow.names:
            raise TLMInputError(
                f"{path}: no column '{text_field}' (columns: {pf.schema_arrow.names}). "
                "Fix: set `corpus.text_field` to the column holding the document text."
            )
        for batch in pf.iter_batches(batch_size=batch_size, columns=[text_field]):
            for text in batch.column(0).to_pylist():
                yield text or ""
    elif fmt in (".jsonl", ".jsonl.gz"):
        for lineno, line in _lines(path, counts):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise TLMInputError(f"{path}:{lineno}: not valid JSON ({e.msg}). Fix: one JSON object per line.") from None
            if not isinstance(record, dict) or text_field not in record:
                raise TLMInputError(
                    f"{path}:{lineno}: no field '{text_field}'. "
                    "Fix: set `corpus.text_field` to the field holding the document text."
                )
            yield record[text_field] if isinstance(record[text_field], str) else ""
    else:
        for _, line in _lines(path, counts):
            yield line


def shard_corpus(
    paths: list[str],
    out_dir: str | Path,
    shard_size: int,
    text_field: str = "text",
    dedup: bool = False,
    min_chars: int = 1,
) -> CorpusCounts:
    """Stream `paths` into `out_dir`/shard-00000.parquet, ... of `shard_size` documents each.

    Empty (whitespace-only or shorter than `min_chars`) documents are dropped, lines with invalid
    UTF-8 are skipped; both are counted in `out_dir`/manifest.json. With `dedup`, exact duplicate
    texts are dropped too (a set of 16-byte digests: ~50 bytes per distinct document).
    """
    counts = CorpusCounts()
    seen: set[bytes] = set()
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        writer = None
        buf_ids: list[int] = []
        buf_texts: list[str] = []

        def flush():
            nonlocal writer
            if buf_texts:
                if writer is None:
                    writer = pq.ParquetWriter(tmp / f"shard-{counts.shards:05d}.parquet", SHARD_SCHEMA, compression="zstd")
                writer.write_table(pa.table({"doc_id": buf_ids, "text": buf_texts}, schema=SHARD_SCHEMA))
                buf_ids.clear()
                buf_texts.clear()

        for path in paths:
            for text in iter_texts(path, text_field, counts):
                text = " ".join(text.split())
                if len(text) < max(min_chars, 1):
                    counts.empty_skipped += 1
                    continue
                if dedup:
                    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
                    if digest in seen:
                        counts.duplicates_skipped += 1
                        continue
                    seen.add(digest)
                buf_ids.append(counts.documents)
                buf_texts.append(text)
                counts.documents += 1
                if len(buf_texts) >= 8192:
                    flush()
                if counts.documents % shard_size == 0:
                    flush()
                    writer.close()
                    writer = None
                    counts.shards += 1
        flush()
        if writer is not None:
            writer.close()
            counts.shards += 1
        if counts.documents == 0:
            raise TLMInputError(
                f"{', '.join(map(str, paths))}: the corpus has no non-empty documents "
                f"({counts.empty_skipped} empty, {counts.bad_utf8_skipped} invalid UTF-8 lines skipped). "
                "Fix: point `corpus.paths` at files with text."
            )
        write_json(asdict(counts), tmp / "manifest.json")
        log.info("corpus: %s", asdict(counts))
    return counts


def shard_paths(corpus_dir: str | Path) -> list[Path]:
    return sorted(Path(corpus_dir).glob("shard-*.parquet"))


def read_docs(shard: str | Path, doc_ids: pa.Array | None = None, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Stream a shard's (doc_id, text) batches, optionally keeping only the ids in `doc_ids`."""
    for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size):
        if doc_ids is not None:
            batch = batch.filter(pc.is_in(batch.column(0), value_set=doc_ids))
            if batch.num_rows == 0:
                continue
        yield batch
