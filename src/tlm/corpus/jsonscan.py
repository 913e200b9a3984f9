"""The text field of a JSON line too long to hold (over LINE_CAP), read from its pieces as they
arrive: the text streamed out, the other keys' values skipped."""

from __future__ import annotations

import re
from collections.abc import Iterator

from tlm.corpus.records import BadRecord


def json_text(pieces: Iterator[str], text_field: str) -> Iterator[str]:
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
    _ESCAPES = {
        '"': '"',
        "\\": "\\",
        "/": "/",
        "b": "\b",
        "f": "\f",
        "n": "\n",
        "r": "\r",
        "t": "\t",
    }

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
        if (
            0xD800 <= code < 0xDC00 and self.buf[self.pos : self.pos + 2] == "\\u"
        ):  # a surrogate pair
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
