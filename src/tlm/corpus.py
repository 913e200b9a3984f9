"""Read a user's general corpus D (any size) as a stream and cut it into Parquet shards.

Memory stays bounded by one shard: documents are read in batches, written to the current shard's
Parquet writer and forgotten. Document ids are global, dense and stable: the i-th kept document of
the inputs (in the order given) gets doc_id i, so the same inputs always give the same ids.

Real corpora are messy, and one bad line should not stop a run of millions (nor pass silently):

* A document longer than `max_doc_chars` is cut into passages of at most that many characters (at
  a space), each a document of its own (`long_docs: split`), or cut to its first passage
  (`truncate`). An oversized document would otherwise dominate BM25 (every query retrieves it),
  S by bytes and the memory of every stage, while MLM reads only its first max_seq_length tokens.
  A line too long to hold (over LINE_CAP bytes, e.g. a whole dump on one line) is read as a
  stream, its text cut into passages as it arrives, so memory stays bounded by the cap.
* Lines that are not valid UTF-8, not JSON, not a JSON object, without the text field, or whose
  text is not a string are skipped and counted by cause in manifest.json; so are empty documents
  and, with dedup, exact duplicates. If more than `max_bad_share` of a file's records (and more
  than GRACE, or all of them) are malformed, checked after its first 1,000 and at its end, the
  job stops at once: a wrong `text_field` then fails on the first file, with the fields found.
* A truncated or corrupt file (gzip, Parquet) or an OS error while reading ends the job with one
  message naming the file and the fix; nothing is left under the output's name.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import logging
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tlm.io import TLMInputError, atomic_path, write_json

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema([("doc_id", pa.int64()), ("text", pa.string())])
FORMATS = (".parquet", ".jsonl", ".jsonl.gz", ".txt", ".txt.gz")
MALFORMED = ("bad_utf8", "bad_json", "not_an_object", "missing_field", "not_text")  # count against max_bad_share
SKIPS = (*MALFORMED, "empty", "duplicate")
LINE_CAP = 1 << 22  # 4 MiB: a longer line is read as a stream
CHECK_AFTER = 1000  # a file's share of malformed records is checked after this many, and at its end
GRACE = 10  # a file may always have this many malformed records (unless it has nothing else)
_SPACE = re.compile(r"\s+")


@dataclass
class CorpusCounts:
    records: int = 0  # lines of text and JSON files, rows of Parquet files
    documents: int = 0  # written to the shards (a long document split into passages counts each)
    long_documents: int = 0  # longer than max_doc_chars: split into passages, or truncated
    utf8_replaced: int = 0  # streamed lines (over LINE_CAP) with invalid UTF-8, read with U+FFFD for it
    shards: int = 0
    skipped: dict = field(default_factory=lambda: dict.fromkeys(SKIPS, 0))


class BadRecord(Exception):
    """A record to skip, by cause (one of MALFORMED)."""

    def __init__(self, cause: str, detail: str = ""):
        super().__init__(detail)
        self.cause = cause


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


def passages(pieces: Iterable[str], max_chars: int) -> Iterator[str]:
    """Text arriving in `pieces`, whitespace collapsed, cut into passages of at most `max_chars`
    characters, each at its last space (a passage without one is cut at the limit)."""
    buf, start = "", 0  # passages are cut from buf[start:] (no copy of the rest per passage)
    for piece in pieces:
        piece = _SPACE.sub(" ", piece)
        buf = buf[start:] + (piece[1:] if buf.endswith(" ") and piece.startswith(" ") else piece)
        start = 0
        while len(buf) - start > max_chars:
            cut = buf.rfind(" ", start + max_chars // 2, start + max_chars + 1)
            cut = cut if cut >= 0 else start + max_chars
            if head := buf[start:cut].strip():
                yield head
            start = cut + buf.startswith(" ", cut)
    if tail := buf[start:].strip():
        yield tail


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


def _json_text(pieces: Iterator[str], text_field: str) -> Iterator[str]:
    """The string value of `text_field` of a JSON object arriving in pieces, streamed out as it is
    read (for lines too long to parse whole). Values of other keys are skipped as they are read."""
    stream = _Chars(pieces)
    if stream.skip_space() != "{":
        raise BadRecord("not_an_object")
    stream.take(1)
    found = False
    while True:
        c = stream.skip_space()
        if c == "}" or c is None:
            break
        if c != '"':
            raise BadRecord("bad_json", "expected a key")
        key = "".join(stream.string())
        if stream.skip_space() != ":":
            raise BadRecord("bad_json", "expected ':'")
        stream.take(1)
        c = stream.skip_space()
        if key == text_field and not found:
            if c != '"':
                raise BadRecord("not_text")
            found = True
            yield from stream.string()
        else:
            stream.skip_value()
        c = stream.skip_space()
        if c == ",":
            stream.take(1)
        elif c != "}":
            raise BadRecord("bad_json", "expected ',' or '}'")
    if not found:
        raise BadRecord("missing_field")


class _Chars:
    """A character stream over string pieces with the few reads a JSON scanner needs; long runs
    (string contents, skipped values) go by regex over whole pieces, never char by char."""

    _STRING_STOP = re.compile(r'["\\]')
    _VALUE_STOP = re.compile(r'["\[\]{},]')
    _ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

    def __init__(self, pieces: Iterator[str]):
        self.pieces, self.buf, self.pos = pieces, "", 0

    def _fill(self, need: int = 1) -> bool:
        while len(self.buf) - self.pos < need:
            piece = next(self.pieces, None)
            if piece is None:
                return False
            self.buf, self.pos = self.buf[self.pos :] + piece, 0
        return True

    def peek(self) -> str | None:
        return self.buf[self.pos] if self._fill() else None

    def take(self, n: int) -> str:
        if not self._fill(n):
            raise BadRecord("bad_json", "unexpected end of line")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip_space(self) -> str | None:
        while (c := self.peek()) is not None and c.isspace():
            self.pos += 1
        return c

    def string(self) -> Iterator[str]:
        """The decoded contents of the JSON string starting here, in pieces of about 64 KiB."""
        self.take(1)  # the opening quote
        parts, size = [], 0
        while True:
            if not self._fill():
                raise BadRecord("bad_json", "unterminated string")
            m = self._STRING_STOP.search(self.buf, self.pos)
            end = m.start() if m else len(self.buf)
            parts.append(self.buf[self.pos : end])
            size += end - self.pos
            self.pos = m.end() if m else end
            if m and m.group() == '"':
                yield "".join(parts)
                return
            if m:
                parts.append(self._escape())
            if size >= 1 << 16:
                yield "".join(parts)
                parts, size = [], 0

    def _escape(self) -> str:
        c = self.take(1)
        if c in self._ESCAPES:
            return self._ESCAPES[c]
        if c != "u":
            raise BadRecord("bad_json", f"bad escape \\{c}")
        code = int(self.take(4), 16)
        if 0xD800 <= code < 0xDC00 and self.buf[self.pos : self.pos + 2] == "\\u":  # a surrogate pair
            self.take(2)
            low = int(self.take(4), 16)
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
        return chr(code)

    def skip_value(self) -> None:
        """Skip one JSON value (nested objects and arrays, strings with escapes)."""
        depth = 0
        while True:
            c = self.peek()
            if c is None:
                raise BadRecord("bad_json", "unexpected end of line")
            if c == '"':
                for _ in self.string():
                    pass
            elif c in "[{":
                depth += 1
                self.pos += 1
            elif c in "]}" or c == ",":
                if depth == 0:
                    return  # the end of the enclosing object: the value ended before it
                depth -= c != ","
                self.pos += 1
            else:  # a number, true, false, null, ':' or space: up to the next structural character
                m = self._VALUE_STOP.search(self.buf, self.pos + 1)
                self.pos = m.start() if m else len(self.buf)
            if depth == 0 and c in '"]}':
                return  # a whole string, object or array


def _record_text(line: bytes, fmt: str, text_field: str) -> str:
    """The text of one (not streamed) line; BadRecord if it has none."""
    try:
        line = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord("bad_utf8") from None
    if fmt.startswith(".txt"):
        return line
    if not line.strip():
        return ""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRecord("bad_json", f"{e.msg} at column {e.colno}") from None
    if not isinstance(record, dict):
        raise BadRecord("not_an_object", type(record).__name__)
    if text_field not in record:
        raise BadRecord("missing_field", f"fields: {sorted(record)[:20]}")
    if not isinstance(record[text_field], str):
        raise BadRecord("not_text", type(record[text_field]).__name__)
    return record[text_field]


class _FileCheck:
    """The share of one file's records that are malformed, checked as it is read."""

    def __init__(self, path, counts: CorpusCounts, max_share: float):
        self.path, self.counts, self.max_share = path, counts, max_share
        self.records = self.bad = 0
        self.by_cause: dict[str, int] = {}
        self.examples: list[str] = []

    def skip(self, lineno: int, e: BadRecord) -> None:
        self.counts.skipped[e.cause] += 1
        self.bad += 1
        self.by_cause[e.cause] = self.by_cause.get(e.cause, 0) + 1
        if len(self.examples) < 3:
            self.examples.append(f"line {lineno}: {e.cause.replace('_', ' ')}{f' ({e})' if str(e) else ''}")

    def record(self, final: bool = False) -> None:
        if not final:
            self.records += 1
            self.counts.records += 1
        too_many = self.bad > self.max_share * self.records and (self.bad > GRACE or self.bad == self.records)
        if (final or self.records == CHECK_AFTER) and self.records and too_many:
            causes = ", ".join(f"{n} {cause.replace('_', ' ')}" for cause, n in self.by_cause.items())
            fix = (
                "set `corpus.text_field` to the field holding the text"
                if "missing_field" in self.by_cause
                else "repair or remove the file"
            )
            raise TLMInputError(
                f"{self.path}: {self.bad} of the first {self.records} records are malformed ({causes}; "
                f"{'; '.join(self.examples)}), more than corpus.max_bad_share = {self.max_share:g}. "
                f"Fix: {fix}, or raise `corpus.max_bad_share` to skip them."
            )


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
        raise TLMInputError(f"{path}: corpus file not found. Fix: correct `corpus.paths` in the config.")
    fmt = corpus_format(path)
    check = _FileCheck(path, counts, max_bad_share)

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
                for lineno, line in enumerate(_raw_lines(f, LINE_CAP), 1):
                    if isinstance(line, bytes):
                        try:
                            yield from document([_record_text(line, fmt, text_field)], lineno)
                        except BadRecord as e:
                            check.skip(lineno, e)
                    else:  # too long to hold: streamed
                        text = _decoded(line, counts)
                        yield from document(text if fmt.startswith(".txt") else _json_text(text, text_field), lineno)
                    check.record()
        check.record(final=True)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise TLMInputError(
            f"{path}: the compressed file is truncated or corrupt ({e}). "
            "Fix: fetch or compress it again, or remove it from `corpus.paths`."
        ) from None
    except pa.ArrowException as e:
        raise TLMInputError(f"{path}: not a readable Parquet file ({e}). Fix: rewrite or remove the file.") from None


def _parquet_texts(path: Path, text_field: str, batch_size: int) -> Iterator[str]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise TLMInputError(f"{path}: not a readable Parquet file ({e}). Fix: rewrite or remove the file.") from None
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
                    writer = pq.ParquetWriter(tmp / f"shard-{counts.shards:05d}.parquet", SHARD_SCHEMA, compression="zstd")
                writer.write_table(pa.table({"doc_id": buf_ids, "text": buf_texts}, schema=SHARD_SCHEMA))
                buf_ids.clear()
                buf_texts.clear()

        for path in paths:
            for text in iter_texts(path, text_field, counts, max_doc_chars, max_bad_share, truncate=long_docs == "truncate"):
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
            skipped = ", ".join(f"{n} {cause.replace('_', ' ')}" for cause, n in counts.skipped.items() if n) or "none"
            raise TLMInputError(
                f"{', '.join(map(str, paths))}: the corpus has no non-empty documents (skipped: {skipped}). "
                "Fix: point `corpus.paths` at files with text."
            )
        write_json(asdict(counts), tmp / "manifest.json")
        log.info("corpus: %s", asdict(counts))
    return counts


def shard_paths(corpus_dir: str | Path) -> list[Path]:
    return sorted(Path(corpus_dir).glob("shard-*.parquet"))
