"""One shard's top-k: `ShardIndex` (memory-mapped, searched with the kernel) and `retrieve_shard`,
one job per (task, shard), streaming the task's queries in batches into a hits file sorted by
query id."""

from __future__ import annotations

import logging
import time
from functools import cached_property
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
        meta_file = index_dir / "global_stats.json"
        meta = read_json(meta_file) if meta_file.exists() else {}
        if meta.get("kernel") != KERNEL_FORMAT:
            found = (meta.get("kernel") or {}).get("format", "4 or older" if meta else "none")
            raise TLMInputError(
                f"{meta_file}: not a tlm index of this version (index layout {found}; this tlm "
                f"reads layout {KERNEL_FORMAT['format']}). Fix: rebuild it with tlm: "
                "`snakemake --forcerun build_index` (a workflow reruns build_index by itself "
                "when the layout changes, as it is one of the rule's params)."
            )
        self.layout = tuple(
            np.load(index_dir / f"{name}.npy", mmap_mode="r") for name in KERNEL_LAYOUT
        )
        self.bm25 = (float(meta["k1"]), float(meta["b"]), float(meta["avg_doc_len"]))
        self.vocab = {term: i for i, term in enumerate(read_json(index_dir / "vocab.json"))}
        self.doc_ids = np.load(index_dir / "doc_ids.npy", mmap_mode="r")

    @cached_property
    def retriever(self) -> bm25s.BM25:
        """The shard as a bm25s index in memory (bm25s's CSC of float32 scores, decoded from the
        forward index with numpy, independently of the kernel): the exhaustive reference."""
        layout = dict(zip(KERNEL_LAYOUT, self.layout))
        ptr = np.asarray(layout["doc_ptr"], np.int64)
        value = np.asarray(layout["doc_terms"], np.int64)
        value[layout["term_escape_at"]] = layout["term_escape_id"]
        # a document's first term and an escaped one are term ids, the others differences
        reset = np.zeros(len(value), bool)
        reset[ptr[:-1][ptr[:-1] < ptr[1:]]] = True
        reset[layout["term_escape_at"]] = True
        at = np.flatnonzero(reset)
        run = np.cumsum(reset) - 1
        steps = np.cumsum(np.where(reset, 0, value))
        term = value[at][run] + steps - steps[at][run]
        tf = np.asarray(layout["doc_tf"], np.float64)
        tf[layout["tf_escape_at"]] = layout["tf_escape"]
        doc = np.repeat(np.arange(self.num_docs), np.diff(ptr))
        k1, b, avg_doc_len = self.bm25
        doc_len = np.asarray(layout["doc_len"], np.float64)[doc]
        scores = layout["term_idf"][term] * tf / (tf + k1 * (1 - b + b * doc_len / avg_doc_len))
        order = np.argsort(term, kind="stable")
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.scores = {
            "data": scores[order].astype(np.float32),
            "indices": doc[order].astype(np.int32),
            "indptr": np.concatenate(
                [[0], np.cumsum(np.bincount(term, minlength=len(self.vocab)))]
            ),
            "num_docs": self.num_docs,
        }
        retriever.vocab_dict = self.vocab
        retriever.nonoccurrence_array = None  # Lucene BM25 needs none
        return retriever

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

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
            docs, scores, counts = search_batch(
                terms, ptr, self.layout, self.bm25, self.num_docs, k, threads
            )
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
        """The reference: score every document (bm25s's float32 sums, in query order, of
        `retriever`), then `top_k`."""
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
