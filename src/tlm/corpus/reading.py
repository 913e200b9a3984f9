"""One corpus file's documents as a stream of passages (`iter_texts`): JSON lines, plain text (both
optionally gzipped) and Parquet, with over-long lines streamed and bad records counted."""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tlm.corpus.jsonscan import json_text
from tlm.corpus.records import (
    BadRecord,
    CorpusCounts,
    FileCheck,
    corpus_format,
    passages,
    record_text,
)
from tlm.io import TLMInputError

LINE_CAP = 1 << 22  # 4 MiB: a longer line is read as a stream


def _raw_lines(f, cap: int) -> Iterator[bytes | Iterator[bytes]]:
    """The lines of a binary file: bytes, or for a line longer than `cap`, an iterator of its pieces
    (consumed or not, the rest of that line is skipped before the next line is read)."""
    while line := f.readline(cap):
        if len(line) < cap or line.endswith(b"\n"):
            yield line
            continue

        def rest(first=line):
            yield first
            while piece := f.readline(cap):
                yield piece
                if piece.endswith(b"\n"):
                    return

        pieces = rest()
        yield pieces
        for _ in pieces:  # drain what the consumer left
            pass


def _decoded(pieces: Iterator[bytes], counts: CorpusCounts) -> Iterator[str]:
    """A streamed line's pieces decoded as UTF-8; invalid bytes become U+FFFD (the line is too
    long to be skipped after the fact), counted in utf8_replaced."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    bad = False
    for piece in pieces:
        text = decoder.decode(piece)
        bad = bad or "\ufffd" in text
        yield text
    counts.utf8_replaced += bad


def iter_texts(
    path,
    text_field: str,
    counts: CorpusCounts,
    max_chars: int,
    max_bad_share: float = 0.01,
    truncate: bool = False,
    batch_size: int = 10_000,
) -> Iterator[str]:
    """Every document of one corpus file, streaming, as passages: a document longer than
    `max_chars` gives several (with `truncate`, only its first)."""
    path = Path(path)
    if not path.exists():
        raise TLMInputError(
            f"{path}: corpus file not found. Fix: correct `corpus.paths` in the config."
        )
    fmt = corpus_format(path)
    check = FileCheck(path, counts, max_bad_share)

    def document(pieces, lineno):
        n = 0
        try:
            for passage in passages(pieces, max_chars):
                n += 1
                if n == 2:
                    counts.long_documents += 1
                    if truncate:
                        break
                yield passage
        except BadRecord as e:
            check.skip(lineno, e)
            return
        if n == 0:
            counts.skipped["empty"] += 1

    try:
        if fmt == ".parquet":
            for row, text in enumerate(_parquet_texts(path, text_field, batch_size), 1):
                yield from document([text], row)
                check.record()
        else:
            opener = gzip.open if fmt.endswith(".gz") else open
            with opener(path, "rb") as f:
                _check_utf8(path, f.read(4096))
                f.seek(0)
                for lineno, line in enumerate(_raw_lines(f, LINE_CAP), 1):
                    if isinstance(line, bytes):
                        try:
                            yield from document([record_text(line, fmt, text_field)], lineno)
                        except BadRecord as e:
                            check.skip(lineno, e)
                    else:  # too long to hold: streamed
                        text = _decoded(line, counts)
                        yield from document(
                            text if fmt.startswith(".txt") else json_text(text, text_field), lineno
                        )
                    check.record()
        check.record(final=True)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise TLMInputError(
            f"{path}: the compressed file is truncated or corrupt ({e}). "
            "Fix: fetch or compress it again, or remove it from `corpus.paths`."
        ) from None
    except pa.ArrowException as e:
        raise TLMInputError(
            f"{path}: not a readable Parquet file ({e}). Fix: rewrite or remove the file."
        ) from None


def _check_utf8(path: Path, head: bytes) -> None:
    """A text or JSON-lines file must be UTF-8: a UTF-16 or UTF-32 file (a byte-order mark, or NUL
    bytes, which UTF-8 text does not hold) would otherwise pass line by line as text with NULs."""
    bom = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if bom or b"\x00" in head:
        raise TLMInputError(
            f"{path}: not UTF-8 text ({'a UTF-16 byte-order mark' if bom else 'NUL bytes'} in its "
            "first 4 KiB: UTF-16 or UTF-32 text, or a binary file). Fix: convert it to UTF-8, e.g. "
            f"`iconv -f UTF-16 -t UTF-8 {path.name} > utf8-{path.name}`, or remove it from `corpus.paths`."
        )


def _parquet_texts(path: Path, text_field: str, batch_size: int) -> Iterator[str]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise TLMInputError(
            f"{path}: not a readable Parquet file ({e}). Fix: rewrite or remove the file."
        ) from None
    if text_field not in pf.schema_arrow.names:
        raise TLMInputError(
            f"{path}: no column '{text_field}' (columns: {pf.schema_arrow.names}). "
            "Fix: set `corpus.text_field` to the column holding the document text."
        )
    column = pf.schema_arrow.field(text_field)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise TLMInputError(
            f"{path}: column '{text_field}' holds {column.type}, not text. "
            "Fix: set `corpus.text_field` to the column holding the document text."
        )
    for batch in pf.iter_batches(batch_size=batch_size, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            yield text or ""
