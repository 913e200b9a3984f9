"""Sharded BM25 that is exact: every shard is scored with corpus-wide statistics.

bm25s computes IDF and average document length from the documents of one index, so two shards'
scores are not comparable. Here indexing is three steps (each a Snakemake job):

1. `count_terms` (per shard): tokenize once, keep the postings (term, tf) and each term's local df;
2. `merge_stats` (once): global df, document count and average length from all shards' counts;
3. `build_shard_index` (per shard): BM25 (Lucene variant, as bm25s) with the GLOBAL statistics,
   saved in bm25s's own format so `bm25s.BM25.load(dir, mmap=True)` reads it.

A shard's top-K therefore holds the same scores one unsharded index would give, and `merge_topk`
of the shards' top-K (ties broken by the lower doc id) is exactly the unsharded top-K.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from bm25s.stopwords import STOPWORDS_EN

from tlm.io import atomic_path, read_json, write_json, write_parquet

log = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default pattern
HITS_COLUMNS = {"query_id": "int64", "doc_id": "int64", "score": "float32", "rank": "int32"}


@dataclass(frozen=True)
class Analyzer:
    """Text -> index terms. The same settings must be used for documents and queries."""

    lowercase: bool = True
    stopwords: str | None = "en"
    stemmer: str | None = None  # a PyStemmer language such as "english", or None

    def __post_init__(self):
        stop = frozenset(STOPWORDS_EN) if self.stopwords == "en" else frozenset()
        object.__setattr__(self, "_stop", stop)
        stem = None
        if self.stemmer:
            import Stemmer  # PyStemmer: only needed when stemming is switched on

            stem = Stemmer.Stemmer(self.stemmer).stemWords
        object.__setattr__(self, "_stem", stem)

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        terms = [t for t in TOKEN_PATTERN.findall(text) if t not in self._stop]
        return self._stem(terms) if self._stem else terms


def count_terms(shard: str | Path, analyzer: Analyzer, out_dir: str | Path, batch_size: int = 65_536) -> dict:
    """Tokenize one corpus shard: postings (doc, term, tf) with a local vocabulary, and local df."""
    vocab: dict[str, int] = {}
    doc_ids, doc_len, ptr, terms, tfs = [], [], [0], [], []
    for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size, columns=["doc_id", "text"]):
        doc_ids.extend(batch.column(0).to_pylist())
        for text in batch.column(1).to_pylist():
            tokens = analyzer(text)
            ids = [vocab.setdefault(t, len(vocab)) for t in tokens]
            uniq, tf = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
            terms.append(uniq)
            tfs.append(tf)
            doc_len.append(len(tokens))
            ptr.append(ptr[-1] + len(uniq))
    term = np.concatenate(terms) if terms else np.zeros(0, np.int64)
    df = np.bincount(term, minlength=len(vocab))
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        np.savez(
            tmp / "postings.npz",
            doc_ids=np.asarray(doc_ids, np.int64),
            doc_len=np.asarray(doc_len, np.int32),
            ptr=np.asarray(ptr, np.int64),
            term=term.astype(np.int32),
            tf=(np.concatenate(tfs) if tfs else np.zeros(0)).astype(np.int32),
        )
        write_parquet(pd.DataFrame({"term": list(vocab), "df": df.astype(np.int64)}), tmp / "terms.parquet")
        meta = {"num_docs": len(doc_ids), "total_len": int(sum(doc_len))}
        write_json(meta, tmp / "counts.json")
    return meta


def merge_stats(count_dirs: list[str | Path], out_dir: str | Path) -> dict:
    """Corpus-wide statistics from every shard's counts: df per term, document count, average length."""
    num_docs = total_len = 0
    frames = []
    for d in count_dirs:
        meta = read_json(Path(d) / "counts.json")
        num_docs += meta["num_docs"]
        total_len += meta["total_len"]
        frames.append(pd.read_parquet(Path(d) / "terms.parquet"))
    df = pd.concat(frames).groupby("term", sort=True, as_index=False)["df"].sum()
    stats = {"num_docs": num_docs, "total_len": total_len, "avg_doc_len": total_len / max(num_docs, 1), "num_terms": len(df)}
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        write_parquet(df, tmp / "df.parquet")
        write_json(stats, tmp / "stats.json")
    return stats


def idf(df: np.ndarray, num_docs: int) -> np.ndarray:
    """Lucene's BM25 idf (bm25s method='lucene'): ln(1 + (N - df + 0.5) / (df + 0.5))."""
    return np.log1p((num_docs - df + 0.5) / (df + 0.5))


def build_shard_index(counts_dir: str | Path, stats_dir: str | Path, out_dir: str | Path, k1: float = 1.5, b: float = 0.75) -> None:
    """Score one shard's postings with global statistics and save it as a bm25s index."""
    counts_dir, stats_dir = Path(counts_dir), Path(stats_dir)
    post = np.load(counts_dir / "postings.npz")
    local_terms = pd.read_parquet(counts_dir / "terms.parquet")["term"]
    stats = read_json(stats_dir / "stats.json")
    global_df = pd.read_parquet(stats_dir / "df.parquet").set_index("term")["df"]
    df = global_df.reindex(local_terms).to_numpy(np.float64)
    term_idf = idf(df, stats["num_docs"])

    doc_len = post["doc_len"].astype(np.float64)
    doc_of_posting = np.repeat(np.arange(len(doc_len)), np.diff(post["ptr"]))
    tf = post["tf"].astype(np.float64)
    norm = k1 * (1 - b + b * doc_len[doc_of_posting] / stats["avg_doc_len"])
    scores = (term_idf[post["term"]] * tf / (tf + norm)).astype(np.float32)

    # CSC (column = term): bm25s's layout; a stable sort keeps documents ascending within a term.
    order = np.argsort(post["term"], kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(post["term"], minlength=len(local_terms)))])
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    retriever.scores = {
        "data": scores[order],
        "indices": doc_of_posting[order].astype(np.int32),
        "indptr": indptr.astype(np.int64),
        "num_docs": len(doc_len),
    }
    retriever.vocab_dict = {t: i for i, t in enumerate(local_terms)}
    retriever.nonoccurrence_array = None  # Lucene BM25 needs none
    with atomic_path(out_dir, is_dir=True) as tmp:
        retriever.save(tmp, show_progress=False)
        np.save(tmp / "doc_ids.npy", post["doc_ids"])
        write_json({**stats, "k1": k1, "b": b}, tmp / "global_stats.json")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest positive scores, ordered by score desc then index asc (exact ties)."""
    cand = np.flatnonzero(scores > 0)
    if len(cand) > k:
        kth = np.partition(scores[cand], len(cand) - k)[len(cand) - k]
        cand = cand[scores[cand] >= kth]  # keeps every doc tied with the k-th
    order = np.lexsort((cand, -scores[cand]))
    return cand[order[:k]]


def search_shard(index_dir: str | Path, queries: list[list[str]], k: int, query_ids=None) -> pd.DataFrame:
    """Top-k hits of each tokenized query in one shard index (memory-mapped)."""
    retriever = bm25s.BM25.load(index_dir, mmap=True, load_corpus=False)
    doc_ids = np.load(Path(index_dir) / "doc_ids.npy", mmap_mode="r")
    query_ids = np.arange(len(queries)) if query_ids is None else np.asarray(query_ids)
    out_q, out_d, out_s, out_r = [], [], [], []
    start = time.perf_counter()
    for n, (qid, tokens) in enumerate(zip(query_ids, queries), 1):
        ids = retriever.get_tokens_ids(tokens)
        if not ids:
            continue
        scores = retriever.get_scores_from_ids(ids)
        best = top_k(scores, k)
        out_q.append(np.full(len(best), qid, np.int64))
        out_d.append(np.asarray(doc_ids[best], np.int64))
        out_s.append(scores[best].astype(np.float32))
        out_r.append(np.arange(1, len(best) + 1, dtype=np.int32))
        if n % 1000 == 0:
            log.info("%s: %d queries, %.0f queries/s", index_dir, n, n / (time.perf_counter() - start))
    return _hits_frame(out_q, out_d, out_s, out_r)


def _hits_frame(q, d, s, r) -> pd.DataFrame:
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    return pd.DataFrame(
        {name: cat(parts, dtype) for (name, dtype), parts in zip(HITS_COLUMNS.items(), (q, d, s, r))}
    )


def merge_topk(hits: list[pd.DataFrame], k: int) -> pd.DataFrame:
    """Global top-k per query from per-shard top-k lists (exact: each shard kept its own top-k)."""
    allhits = pd.concat(hits, ignore_index=True)
    allhits = allhits.sort_values(["query_id", "score", "doc_id"], ascending=[True, False, True], kind="stable")
    top = allhits.groupby("query_id", sort=False).head(k).copy()
    top["rank"] = (top.groupby("query_id", sort=False).cumcount() + 1).astype("int32")
    return top.reset_index(drop=True).astype(HITS_COLUMNS)
