"""Text -> index terms, the same for documents and queries (bm25s's pattern, plus character pairs for
scripts written without spaces)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bm25s.stopwords import STOPWORDS_EN

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default pattern
# Scripts written without spaces between words: Han (Chinese, Japanese kanji), kana, Thai, Lao,
# Khmer, Myanmar. TOKEN_PATTERN would make one term of a whole sentence of them, which no query
# matches; their runs are indexed as overlapping character pairs instead (as Lucene's CJKAnalyzer).
UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
)
UNSPACED_CHAR = re.compile(f"[{UNSPACED}]")
UNSPACED_PATTERN = re.compile(f"[{UNSPACED}]+|[^\\W{UNSPACED}]{{2,}}")


@dataclass(frozen=True)
class Analyzer:
    """Text -> index terms. The same settings must be used for documents and queries."""

    lowercase: bool = True
    stopwords: str | None = "en"
    stemmer: str | None = None  # a PyStemmer language such as "english", or None
    analyzer: str = (
        "auto"  # auto: runs of unspaced scripts as character pairs; word: TOKEN_PATTERN alone
    )

    def __post_init__(self):
        stop = frozenset(STOPWORDS_EN) if self.stopwords == "en" else frozenset()
        object.__setattr__(self, "_stop", stop)
        stem = None
        if self.stemmer:
            import Stemmer  # PyStemmer: only needed when stemming is switched on

            stem = Stemmer.Stemmer(self.stemmer).stemWords
        object.__setattr__(self, "_stem", stem)

    def __call__(self, text: str) -> list[str]:
        terms = [t for t in self.words(text) if t not in self._stop]
        return self._stem(terms) if self._stem else terms

    def words(self, text: str) -> list[str]:
        """The words of `text` before stopwords and stemming (each maps to at most one term); a
        run of an unspaced script gives its overlapping character pairs (one character alone)."""
        text = text.lower() if self.lowercase else text
        if self.analyzer == "word" or not UNSPACED_CHAR.search(
            text
        ):  # ordinary text: one regex pass
            return TOKEN_PATTERN.findall(text)
        words = []
        for w in UNSPACED_PATTERN.findall(text):
            if UNSPACED_CHAR.match(w):
                words.extend([w[i : i + 2] for i in range(len(w) - 1)] if len(w) > 1 else [w])
            else:
                words.append(w)
        return words
