"""Sharded BM25 that is exact: every shard is scored with corpus-wide statistics.

bm25s computes IDF and average document length from the documents of one index, so two shards'
scores are not comparable. Here indexing is three steps (each a Snakemake job):

1. `count_terms` (per shard): tokenize once, keep the postings (term, tf) and each term's local df;
2. `merge_stats` (once): global df, document count and average length from all shards' counts;
3. `build_shard_index` (per shard): BM25 (Lucene variant, as bm25s) with the GLOBAL statistics,
   saved in bm25s's own format so `bm25s.BM25.load(dir, mmap=True)` reads it, plus each term's
   best score (term_max.npy) for the search's pruning.

A shard's top-K therefore holds the same scores one unsharded index would give, and `merge_topk`
of the shards' top-K (ties broken by the lower doc id) is exactly the unsharded top-K.
`ShardIndex.search` finds a shard's top-K with a numba MaxScore kernel (see "the search kernel"
below), over many threads, returning exactly what scoring every document would.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numba
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from bm25s.stopwords import STOPWORDS_EN

from tlm.io import TLMInputError, atomic_path, read_json, write_json, write_parquet

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
        terms = [t for t in self.words(text) if t not in self._stop]
        return self._stem(terms) if self._stem else terms

    def words(self, text: str) -> list[str]:
        """The words of `text` before stopwords and stemming (each maps to at most one term)."""
        return TOKEN_PATTERN.findall(text.lower() if self.lowercase else text)


class _TermIds(dict):
    """Word -> local term id (-1 for a stopword), worked out once per distinct word.

    Stopword lookup and stemming then cost per vocabulary word instead of per token.
    """

    def __init__(self, analyzer: Analyzer):
        super().__init__()
        self.analyzer = analyzer
        self.vocab: dict[str, int] = {}

    def __missing__(self, word: str) -> int:
        terms = self.analyzer(word)
        self[word] = term = self.vocab.setdefault(terms[0], len(self.vocab)) if terms else -1
        return term


def count_terms(shard: str | Path, analyzer: Analyzer, out_dir: str | Path, batch_size: int = 65_536) -> dict:
    """Tokenize one corpus shard: postings (doc, term, tf) with a local vocabulary, and local df."""
    term_ids = _TermIds(analyzer)
    doc_ids, doc_len, term, tf = ([np.zeros(0, np.int64)] for _ in range(4))
    ptr = [np.zeros(1, np.int64)]
    for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size, columns=["doc_id", "text"]):
        doc_ids.append(batch.column(0).to_numpy())
        ids, n_words = [], []
        for text in batch.column(1).to_pylist():
            words = analyzer.words(text)
            n_words.append(len(words))
            ids.extend(map(term_ids.__getitem__, words))
        ids = np.asarray(ids, np.int64)
        doc = np.repeat(np.arange(len(n_words), dtype=np.int64), n_words)[ids >= 0]
        # one sort of (doc, term) keys gives every document's distinct terms and their frequencies
        keys, counts = np.unique((doc << 32) | ids[ids >= 0], return_counts=True)
        doc_len.append(np.bincount(doc, minlength=len(n_words)))
        ptr.append(ptr[-1][-1] + np.searchsorted(keys >> 32, np.arange(1, len(n_words) + 1)))
        term.append(keys & 0xFFFFFFFF)
        tf.append(counts)
    vocab = term_ids.vocab
    doc_ids, doc_len, ptr, term, tf = (np.concatenate(x) for x in (doc_ids, doc_len, ptr, term, tf))
    df = np.bincount(term, minlength=len(vocab))
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        np.savez(
            tmp / "postings.npz",
            doc_ids=doc_ids.astype(np.int64),
            doc_len=doc_len.astype(np.int32),
            ptr=ptr.astype(np.int64),
            term=term.astype(np.int32),
            tf=tf.astype(np.int32),
        )
        write_parquet(pd.DataFrame({"term": list(vocab), "df": df.astype(np.int64)}), tmp / "terms.parquet")
        meta = {"num_docs": len(doc_ids), "total_len": int(doc_len.sum())}
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


def build_shard_index(
    counts_dir: str | Path, stats_dir: str | Path, out_dir: str | Path, k1: float = 1.5, b: float = 0.75
) -> None:
    """Score one shard's postings with global statistics; save it as a bm25s index plus term maxima."""
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
    indptr = np.concatenate([[0], np.cumsum(np.bincount(post["term"], minlength=len(local_terms)))]).astype(np.int64)
    data, indices = scores[order], doc_of_posting[order].astype(np.int32)
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    retriever.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": len(doc_len)}
    retriever.vocab_dict = {t: i for i, t in enumerate(local_terms)}
    retriever.nonoccurrence_array = None  # Lucene BM25 needs none
    with atomic_path(out_dir, is_dir=True) as tmp:
        retriever.save(tmp, show_progress=False)
        np.save(tmp / "doc_ids.npy", post["doc_ids"])
        # each term's best score in the shard: the upper bounds that let the search stop early
        np.save(tmp / "term_max.npy", np.maximum.reduceat(data, indptr[:-1]) if len(data) else np.zeros(len(local_terms), np.float32))
        write_json({**stats, "k1": k1, "b": b}, tmp / "global_stats.json")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest positive scores, ordered by score desc then index asc (exact ties)."""
    cand = np.flatnonzero(scores > 0)
    if len(cand) > k:
        kth = np.partition(scores[cand], len(cand) - k)[len(cand) - k]
        cand = cand[scores[cand] >= kth]  # keeps every doc tied with the k-th
    order = np.lexsort((cand, -scores[cand]))
    return cand[order[:k]]


class ShardIndex:
    """One shard's index, memory-mapped: the OS pages in only the postings that queries touch."""

    def __init__(self, index_dir: str | Path):
        index_dir = Path(index_dir)
        if not (index_dir / "term_max.npy").exists():
            raise TLMInputError(f"{index_dir}: no term_max.npy, so not a tlm index. Fix: rebuild it with tlm (rule build_index).")
        self.term_max = np.load(index_dir / "term_max.npy", mmap_mode="r")
        self.retriever = bm25s.BM25.load(index_dir, mmap=True, load_corpus=False)
        self.vocab = self.retriever.vocab_dict
        self.scores = self.retriever.scores
        self.doc_ids = np.load(index_dir / "doc_ids.npy", mmap_mode="r")

    @property
    def num_docs(self) -> int:
        return int(self.scores["num_docs"])

    def term_ids(self, queries: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Queries as one flat array of term ids plus offsets; unknown terms dropped, repeats kept (as bm25s)."""
        ids = [[self.vocab[t] for t in q if t in self.vocab] for q in queries]
        ptr = np.zeros(len(ids) + 1, np.int64)
        np.cumsum([len(q) for q in ids], out=ptr[1:])
        return np.fromiter((t for q in ids for t in q), np.int32, int(ptr[-1])), ptr

    def search(self, queries: list[list[str]], k: int, query_ids=None, threads: int = 1, batch_size: int = 4096) -> pd.DataFrame:
        """Top-k hits of each tokenized query, with MaxScore pruning (exact).

        Queries are scored in batches of `batch_size` over `threads` threads; the result equals
        `search_exhaustive` (same float32 scores, ties to the lower doc id).
        """
        query_ids = np.arange(len(queries)) if query_ids is None else np.asarray(query_ids)
        k = max(0, min(k, self.num_docs))
        threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
        sc = self.scores
        out_q, out_d, out_s, out_r = [], [], [], []
        start = time.perf_counter()
        for lo in range(0, len(queries), batch_size):
            terms, ptr = self.term_ids(queries[lo : lo + batch_size])
            docs, scores, counts = _search_batch(
                terms, ptr, sc["data"], sc["indices"], sc["indptr"], self.term_max, self.num_docs, k, threads
            )
            rank = np.arange(1, k + 1, dtype=np.int32)
            hit = rank[None, :] <= counts[:, None]
            out_q.append(np.repeat(query_ids[lo : lo + batch_size], counts))
            out_d.append(np.asarray(self.doc_ids[docs[hit]], np.int64))
            out_s.append(scores[hit])
            out_r.append(np.broadcast_to(rank, hit.shape)[hit])
            done = min(lo + batch_size, len(queries))
            log.info("%d/%d queries, %.0f queries/s", done, len(queries), done / (time.perf_counter() - start))
        return _hits_frame(out_q, out_d, out_s, out_r)

    def search_exhaustive(self, queries: list[list[str]], k: int, query_ids=None) -> pd.DataFrame:
        """The reference: score every document (bm25s's float32 sums, in query order), then `top_k`."""
        query_ids = np.arange(len(queries)) if query_ids is None else np.asarray(query_ids)
        out_q, out_d, out_s, out_r = [], [], [], []
        for qid, tokens in zip(query_ids, queries):
            ids = self.retriever.get_tokens_ids(tokens)
            if not ids:
                continue
            scores = self.retriever.get_scores_from_ids(ids)
            best = top_k(scores, k)
            out_q.append(np.full(len(best), qid, np.int64))
            out_d.append(np.asarray(self.doc_ids[best], np.int64))
            out_s.append(scores[best].astype(np.float32))
            out_r.append(np.arange(1, len(best) + 1, dtype=np.int32))
        return _hits_frame(out_q, out_d, out_s, out_r)


def search_shard(index_dir: str | Path, queries: list[list[str]], k: int, query_ids=None, threads: int = 1) -> pd.DataFrame:
    """Top-k hits of each tokenized query in one shard index (memory-mapped); see `ShardIndex.search`."""
    log.info("searching %s with %d threads", index_dir, threads)
    return ShardIndex(index_dir).search(queries, k, query_ids, threads)


# --- the search kernel ------------------------------------------------------------------------
# MaxScore (Turtle & Flood, 1995), term at a time. Terms go by descending upper bound (their best
# score in the shard): rare terms first, into a dense accumulator. Once the bounds of the terms
# left sum below the k-th best partial score, no unseen document can reach the top k: the
# candidates are fixed, and each remaining term only adds to them (a galloping search for each
# candidate when they are few against a long list); candidates whose partial score plus the bounds
# left falls below the k-th are dropped as they fall. The survivors are rescored exactly, adding
# the terms in query order, so every score is bit-identical to bm25s's exhaustive float32 sum.
# Pruning compares partial sums with a relative slack far above their float32 rounding, so it
# never drops a document of the exact top k (ties included).


@numba.njit(cache=True, nogil=True)
def _worse(s1, d1, s2, d2):
    return s1 < s2 or (s1 == s2 and d1 > d2)


@numba.njit(cache=True, nogil=True)
def _heap_sift_down(hs, hd, i, n):
    """Restore the min-heap (worst hit on top) below position i."""
    while True:
        child = 2 * i + 1
        if child >= n:
            return
        if child + 1 < n and _worse(hs[child + 1], hd[child + 1], hs[child], hd[child]):
            child += 1
        if not _worse(hs[child], hd[child], hs[i], hd[i]):
            return
        hs[i], hs[child] = hs[child], hs[i]
        hd[i], hd[child] = hd[child], hd[i]
        i = child


@numba.njit(cache=True, nogil=True)
def _heap_push(hs, hd, n, k, s, d):
    """Offer hit (s, d) to a heap of n <= k hits; return the new size."""
    if n < k:
        i = n
        hs[i], hd[i] = s, d
        while i > 0:  # sift up
            parent = (i - 1) // 2
            if not _worse(hs[i], hd[i], hs[parent], hd[parent]):
                break
            hs[i], hs[parent] = hs[parent], hs[i]
            hd[i], hd[parent] = hd[parent], hd[i]
            i = parent
        return n + 1
    if _worse(hs[0], hd[0], s, d):
        hs[0], hd[0] = s, d
        _heap_sift_down(hs, hd, 0, n)
    return n


@numba.njit(cache=True, nogil=True)
def _gallop(indices, lo, hi, d):
    """First position p in [lo, hi) with indices[p] >= d (ascending), searching outwards from lo."""
    if lo >= hi or indices[lo] >= d:
        return lo
    step, last_below = 1, lo
    while lo + step < hi and indices[lo + step] < d:
        last_below = lo + step
        step *= 2
    a, b = last_below + 1, min(lo + step, hi)
    while a < b:
        mid = (a + b) // 2
        if indices[mid] < d:
            a = mid + 1
        else:
            b = mid
    return a


@numba.njit(cache=True, nogil=True)
def _raise_bound(acc, heap, pos, size, k, d):
    """Account for acc[d] having grown in the min-heap of the k best partial scores; return its size.

    The heap holds distinct documents and their partial scores only grow, so its least score is a
    lower bound of the k-th best final score at any time (pos[d]: d's place in the heap, or -1).
    """
    if pos[d] < 0:
        if size < k:
            i = size
            size += 1
            while i > 0 and acc[heap[(i - 1) // 2]] > acc[d]:  # sift up
                heap[i] = heap[(i - 1) // 2]
                pos[heap[i]] = i
                i = (i - 1) // 2
            heap[i], pos[d] = d, i
            return size
        if acc[d] <= acc[heap[0]]:
            return size
        pos[heap[0]] = -1
        heap[0], pos[d] = d, 0
    i = pos[d]
    while True:  # sift down
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and acc[heap[child + 1]] < acc[heap[child]]:
            child += 1
        if acc[heap[child]] >= acc[d]:
            break
        heap[i] = heap[child]
        pos[heap[i]] = i
        i = child
    heap[i], pos[d] = d, i
    return size


@numba.njit(cache=True, nogil=True)
def _prune(acc, cand, n, rest, theta, slack):
    """Keep the candidates whose partial score plus `rest` can reach `theta`; zero the others' acc."""
    kept = 0
    for j in range(n):
        d = cand[j]
        if (acc[d] + rest) * (1 + slack) >= theta * (1 - slack):
            cand[kept] = d
            kept += 1
        else:
            acc[d] = 0
    return kept


@numba.njit(cache=True, nogil=True)
def _search_query(terms, data, indices, indptr, term_max, k, acc, cand, pos, hs, hd):
    """Top-k of one query into (hs, hd), best first; returns the number of hits.

    `acc` (one float32 per document) must be all zero and `pos` all -1; both are left so.
    """
    m = len(terms)
    if m == 0 or k == 0:
        return 0
    slack = (m + 2) * 2.0**-20  # relative float32 rounding of an m-term sum is below m * 2**-24
    bound = np.empty(m)
    for s in range(m):
        bound[s] = term_max[terms[s]]
    order = np.argsort(-bound)
    rest = bound.sum()
    heap = np.empty(k, np.int32)
    # phase 1: whole posting lists, until documents not yet seen cannot reach the top k
    n, size, i, theta = 0, 0, 0, np.float32(0)  # theta: the heap's least score once it holds k
    while i < m:
        t = terms[order[i]]
        for p in range(indptr[t], indptr[t + 1]):
            d = indices[p]
            if acc[d] == 0:
                cand[n] = d
                n += 1
            acc[d] += data[p]
            if size < k or acc[d] > theta:  # (a document in the heap was >= theta, so is > now)
                size = _raise_bound(acc, heap, pos, size, k, d)
                theta = acc[heap[0]] if size == k else theta
        rest -= bound[order[i]]
        i += 1
        if size == k and rest * (1 + slack) < theta * (1 - slack):
            break
    # phase 2: the remaining terms only add to the candidates that can still reach the top k
    while True:
        n = _prune(acc, cand, n, rest, theta, slack)
        if i == m:
            break
        t = terms[order[i]]
        p, end = indptr[t], indptr[t + 1]
        if 16 * n < end - p:  # few candidates, long list: search for them instead of reading it all
            cand[:n] = np.sort(cand[:n])  # (pruning keeps the order)
            for j in range(n):
                p = _gallop(indices, p, end, cand[j])
                if p == end:
                    break
                if indices[p] == cand[j]:
                    acc[cand[j]] += data[p]
                    size = _raise_bound(acc, heap, pos, size, k, cand[j])
                    theta = acc[heap[0]] if size == k else theta
        else:
            for p in range(p, end):
                d = indices[p]
                if acc[d] > 0:
                    acc[d] += data[p]
                    if size < k or acc[d] > theta:
                        size = _raise_bound(acc, heap, pos, size, k, d)
                        theta = acc[heap[0]] if size == k else theta
        rest -= bound[order[i]]
        i += 1
    for j in range(size):
        pos[heap[j]] = -1
    # exact float32 scores of the survivors, terms added in query order as bm25s does
    survivors = np.sort(cand[:n])
    exact = np.zeros(n, np.float32)
    for s in range(m):
        t = terms[s]
        p, end = indptr[t], indptr[t + 1]
        for j in range(n):
            p = _gallop(indices, p, end, survivors[j])
            if p == end:
                break
            if indices[p] == survivors[j]:
                exact[j] += data[p]
    hits = 0
    for j in range(n):
        acc[survivors[j]] = 0
        hits = _heap_push(hs, hd, hits, k, exact[j], np.int64(survivors[j]))
    for j in range(hits - 1, 0, -1):  # heapsort: the worst hit goes to the back
        hs[0], hs[j] = hs[j], hs[0]
        hd[0], hd[j] = hd[j], hd[0]
        _heap_sift_down(hs, hd, 0, j)
    return hits


@numba.njit(cache=True, parallel=True)
def _search_batch(terms, ptr, data, indices, indptr, term_max, num_docs, k, workers):
    """Top-k (local doc index, score) of every query, best first, spread over `workers` threads."""
    nq = len(ptr) - 1
    docs = np.zeros((nq, k), np.int64)
    scores = np.zeros((nq, k), np.float32)
    counts = np.zeros(nq, np.int64)
    for w in numba.prange(workers):
        # one accumulator per worker, reused: it is zero again after every query
        acc = np.zeros(num_docs, np.float32)
        cand = np.empty(num_docs, np.int32)
        pos = np.full(num_docs, -1, np.int32)
        hs = np.empty(k, np.float32)
        hd = np.empty(k, np.int64)
        for q in range(w, nq, workers):  # interleaved, so long and short queries spread evenly
            n = _search_query(terms[ptr[q] : ptr[q + 1]], data, indices, indptr, term_max, k, acc, cand, pos, hs, hd)
            docs[q, :n] = hd[:n]
            scores[q, :n] = hs[:n]
            counts[q] = n
    return docs, scores, counts


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
