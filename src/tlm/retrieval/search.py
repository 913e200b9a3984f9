"""One shard's top-k: `ShardIndex` (memory-mapped, searched with the kernel) and `retrieve_shard`,
one job per (task, shard), streaming the task's queries in batches into a hits file sorted by
query id."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import bm25s
import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tlm.io import TLMInputError, atomic_path, read_json
from tlm.retrieval.analyzer import Analyzer
from tlm.retrieval.kernel import KERNEL_FORMAT, KERNEL_LAYOUT, search_batch
from tlm.retrieval.merge import CURSOR_ROWS, HITS_COLUMNS, HITS_SCHEMA

log = logging.getLogger(__name__)


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
        meta = (
            read_json(index_dir / "global_stats.json")
            if (index_dir / "global_stats.json").exists()
            else {}
        )
        if meta.get("kernel") != KERNEL_FORMAT:
            raise TLMInputError(
                f"{index_dir}: not a tlm index of this version (its search-kernel files are missing or of another format). "
                "Fix: rebuild it with tlm (rule build_index)."
            )
        self.layout = tuple(
            np.load(index_dir / f"{name}.npy", mmap_mode="r") for name in KERNEL_LAYOUT
        )
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

    def search(
        self,
        queries: list[list[str]],
        k: int,
        query_ids=None,
        threads: int = 1,
        batch_size: int = 4096,
    ) -> pd.DataFrame:
        """Top-k hits of each tokenized query (exact; tlm.retrieval.kernel).

        Queries are scored in batches of `batch_size` over `threads` threads; the result equals
        `search_exhaustive` (same float32 scores, ties to the lower doc id).
        """
        query_ids = np.arange(len(queries)) if query_ids is None else np.asarray(query_ids)
        k = max(0, min(k, self.num_docs))
        threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
        out_q, out_d, out_s, out_r = [], [], [], []
        start = time.perf_counter()
        for lo in range(0, len(queries), batch_size):
            terms, ptr = self.term_ids(queries[lo : lo + batch_size])
            docs, scores, counts = search_batch(terms, ptr, self.layout, self.num_docs, k, threads)
            rank = np.arange(1, k + 1, dtype=np.int32)
            hit = rank[None, :] <= counts[:, None]
            out_q.append(np.repeat(query_ids[lo : lo + batch_size], counts))
            out_d.append(np.asarray(self.doc_ids[docs[hit]], np.int64))
            out_s.append(scores[hit])
            out_r.append(np.broadcast_to(rank, hit.shape)[hit])
            done = min(lo + batch_size, len(queries))
            log.info(
                "%d/%d queries, %.0f queries/s",
                done,
                len(queries),
                done / (time.perf_counter() - start),
            )
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


def search_shard(
    index_dir: str | Path, queries: list[list[str]], k: int, query_ids=None, threads: int = 1
) -> pd.DataFrame:
    """Top-k hits of each tokenized query in one shard index (memory-mapped); see `ShardIndex.search`."""
    log.info("searching %s with %d threads", index_dir, threads)
    return ShardIndex(index_dir).search(queries, k, query_ids, threads)


def _hits_frame(q, d, s, r) -> pd.DataFrame:
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    return pd.DataFrame(
        {
            name: cat(parts, dtype)
            for (name, dtype), parts in zip(HITS_COLUMNS.items(), (q, d, s, r))
        }
    )


def retrieve_shard(
    index_dir, queries, k: int, out, analyzer: Analyzer, threads: int = 1, batch_size: int = 4096
) -> None:
    """The top-k hits in one shard of each query of `queries` (query_id, text), written to `out`."""
    index = ShardIndex(index_dir)
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, HITS_SCHEMA, compression="zstd") as writer:
        for batch in pq.ParquetFile(queries).iter_batches(
            batch_size=batch_size, columns=["query_id", "text"]
        ):
            tokens = [analyzer(text) for text in batch.column(1).to_pylist()]
            hits = index.search(
                tokens, k, batch.column(0).to_numpy(), threads=threads, batch_size=batch_size
            )
            writer.write_table(
                pa.Table.from_pandas(hits, schema=HITS_SCHEMA, preserve_index=False),
                row_group_size=CURSOR_ROWS,
            )
