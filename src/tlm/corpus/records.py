"""What a corpus record is: its file formats, its text (or why it is skipped), its passages, and
the counts of a run with the check of each file's share of malformed records."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tlm.io import TLMInputError

FORMATS = (".parquet", ".jsonl", ".jsonl.gz", ".txt", ".txt.gz")
MALFORMED = (
    "bad_utf8",
    "bad_json",
    "not_an_object",
    "missing_field",
    "not_text",
)  # count against max_bad_share
SKIPS = (*MALFORMED, "empty", "duplicate")
CHECK_AFTER = 1000  # a file's share of malformed records is checked after this many, and at its end
GRACE = 10  # a file may always have this many malformed records (unless it has nothing else)
_SPACE = re.compile(r"\s+")


@dataclass
class CorpusCounts:
    records: int = 0  # lines of text and JSON files, rows of Parquet files
    documents: int = 0  # written to the shards (a long document split into passages counts each)
    long_documents: int = 0  # longer than max_doc_chars: split into passages, or truncated
    utf8_replaced: int = (
        0  # streamed lines (over LINE_CAP) with invalid UTF-8, read with U+FFFD for it
    )
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


def record_text(line: bytes, fmt: str, text_field: str) -> str:
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
    if record[text_field] is None:  # a null text is an empty document, as in Parquet
        return ""
    if not isinstance(record[text_field], str):
        raise BadRecord("not_text", type(record[text_field]).__name__)
    return record[text_field]


class FileCheck:
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
            self.examples.append(
                f"line {lineno}: {e.cause.replace('_', ' ')}{f' ({e})' if str(e) else ''}"
            )

    def record(self, final: bool = False) -> None:
        if not final:
            self.records += 1
            self.counts.records += 1
        too_many = self.bad > self.max_share * self.records and (
            self.bad > GRACE or self.bad == self.records
        )
        if (final or self.records == CHECK_AFTER) and self.records and too_many:
            causes = ", ".join(
                f"{n} {cause.replace('_', ' ')}" for cause, n in self.by_cause.items()
            )
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
