"""The corpus cut into Parquet shards of global, dense, stable document ids, exact duplicates
dropped on request (`shard_corpus`)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tlm.corpus.reading import iter_texts
from tlm.corpus.records import CorpusCounts
from tlm.io import TLMInputError, atomic_path, write_json

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema([("doc_id", pa.int64()), ("text", pa.string())])


def shard_corpus(
    paths: list[str],
    out_dir: str | Path,
    shard_size: int,
    text_field: str = "text",
    dedup: bool = False,
    min_chars: int = 1,
    max_doc_chars: int = 10_000,
    long_docs: str = "split",
    max_bad_share: float = 0.01,
) -> CorpusCounts:
    """Stream `paths` into `out_dir`/shard-00000.parquet, ... of `shard_size` documents each.

    Documents longer than `max_doc_chars` become passages (`long_docs`: split, or truncate to the
    first); empty ones (whitespace-only or shorter than `min_chars`) and malformed records are
    skipped; with `dedup`, exact duplicate texts too (a set of 16-byte digests: ~50 bytes per
    distinct document). Everything skipped is counted, by cause, in `out_dir`/manifest.json.
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
                    writer = pq.ParquetWriter(
                        tmp / f"shard-{counts.shards:05d}.parquet", SHARD_SCHEMA, compression="zstd"
                    )
                writer.write_table(
                    pa.table({"doc_id": buf_ids, "text": buf_texts}, schema=SHARD_SCHEMA)
                )
                buf_ids.clear()
                buf_texts.clear()

        for path in paths:
            for text in iter_texts(
                path,
                text_field,
                counts,
                max_doc_chars,
                max_bad_share,
                truncate=long_docs == "truncate",
            ):
                if len(text) < max(min_chars, 1):
                    counts.skipped["empty"] += 1
                    continue
                if dedup:
                    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
                    if digest in seen:
                        counts.skipped["duplicate"] += 1
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
            skipped = (
                ", ".join(
                    f"{n} {cause.replace('_', ' ')}" for cause, n in counts.skipped.items() if n
                )
                or "none"
            )
            raise TLMInputError(
                f"{', '.join(map(str, paths))}: the corpus has no non-empty documents (skipped: {skipped}). "
                "Fix: point `corpus.paths` at files with text."
            )
        write_json(asdict(counts), tmp / "manifest.json")
        log.info("corpus: %s", asdict(counts))
    return counts


def shard_paths(corpus_dir: str | Path) -> list[Path]:
    return sorted(Path(corpus_dir).glob("shard-*.parquet"))
