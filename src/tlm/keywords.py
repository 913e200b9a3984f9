"""Offline keyword extraction for long task texts: RAKE (Rose et al., 2010), as TLM's reference code.

Candidate phrases are maximal runs of words between stopwords and punctuation; a word scores
degree/frequency over the candidates, a phrase the sum of its words. The reference code keeps the
20 best phrases per text as the BM25 query. Pure Python, no model or download.
"""

from __future__ import annotations

import re

from bm25s.stopwords import STOPWORDS_EN_PLUS

STOPWORDS = frozenset(STOPWORDS_EN_PLUS)
_SPLIT = re.compile(r"[.!?,;:\t\n\"()\[\]{}<>|/\\]+|\s-\s")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_'+#.-]*[A-Za-z0-9+#]|[A-Za-z0-9]")


def candidate_phrases(text: str) -> list[tuple[str, ...]]:
    phrases = []
    for chunk in _SPLIT.split(text.lower()):
        phrase: list[str] = []
        for word in _WORD.findall(chunk):
            if word in STOPWORDS or word.isdigit():
                if phrase:
                    phrases.append(tuple(phrase))
                phrase = []
            else:
                phrase.append(word)
        if phrase:
            phrases.append(tuple(phrase))
    return phrases


def rake_keywords(text: str, num_keywords: int = 20, max_words: int = 4) -> list[str]:
    """The `num_keywords` best RAKE phrases of `text` (ties: first occurrence first)."""
    phrases = [p for p in candidate_phrases(text) if len(p) <= max_words]
    freq: dict[str, int] = {}
    degree: dict[str, int] = {}
    for p in phrases:
        for w in p:
            freq[w] = freq.get(w, 0) + 1
            degree[w] = degree.get(w, 0) + len(p)
    best: dict[tuple[str, ...], float] = {}
    for p in phrases:  # dict keeps first-occurrence order; sorted() below is stable
        best.setdefault(p, sum(degree[w] / freq[w] for w in p))
    ranked = sorted(best.items(), key=lambda item: -item[1])
    return [" ".join(p) for p, _ in ranked[:num_keywords]]


def make_query(text: str, mode: str, num_keywords: int) -> str:
    """The BM25 query for one task example: its raw text, or its RAKE keywords joined."""
    if mode == "raw":
        return text
    if mode == "keywords":
        return " ".join(rake_keywords(text, num_keywords)) or text
    raise ValueError(f"unknown query mode {mode!r}: use 'raw' or 'keywords'")
