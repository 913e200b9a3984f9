"""Retrieval at corpus scale, streamed: no job holds more than one shard's index, a batch of
queries or a round of hits, whatever the number of shards and queries.

* `retrieve_shard`: one job per (task, shard) searches the shard's memory-mapped index for the
  task's queries in batches, each batch's hits appended to the hits file (sorted by query id).
* `merge_topk_files`: a k-way merge of the shards' sorted hits, in rounds of query ids: each round
  reads from every shard the hits of its queries (a cursor per file, each read once) and keeps
  the global top-k. Over `MAX_OPEN` shards, groups are merged first (two levels).
(S is then fetched shard by shard: tlm.select.)
* `retrieval_warnings`: what a user must hear of a merge (most queries without a hit, K over the
  corpus's size).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tlm.bm25 import Analyzer, ShardIndex, top_rows
from tlm.io import atomic_path

HITS_SCHEMA = pa.schema([("query_id", pa.int64()), ("doc_id", pa.int64()), ("score", pa.float32()), ("rank", pa.int32())])
ROUND_ROWS = 500_000  # hits per merge round (with the sort's temporaries, ~50 MB)
MAX_OPEN = 128  # hits files open at once in one merge (~0.75 MB each)
CURSOR_ROWS = 16_384  # hits files are written in row groups of this size: a cursor holds one


def retrieve_shard(index_dir, queries, k: int, out, analyzer: Analyzer, threads: int = 1, batch_size: int = 4096) -> None:
    """The top-k hits in one shard of each query of `queries` (query_id, text), written to `out`."""
    index = ShardIndex(index_dir)
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, HITS_SCHEMA, compression="zstd") as writer:
        for batch in pq.ParquetFile(queries).iter_batches(batch_size=batch_size, columns=["query_id", "text"]):
            tokens = [analyzer(text) for text in batch.column(1).to_pylist()]
            hits = index.search(tokens, k, batch.column(0).to_numpy(), threads=threads, batch_size=batch_size)
            writer.write_table(pa.Table.from_pandas(hits, schema=HITS_SCHEMA, preserve_index=False), row_group_size=CURSOR_ROWS)


class _Cursor:
    """A hits file read forward in query-id order, a row group at a time (kept as Arrow batches:
    their memory pool reuses what a round frees, where many numpy arrays would fragment the heap)."""

    def __init__(self, path):
        # no pre-buffering: it would hold whole column chunks (3.6 MB a file instead of 0.75)
        reader = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)
        self.batches = reader.iter_batches(batch_size=CURSOR_ROWS, columns=["query_id", "doc_id", "score"])
        self.pending: list[pa.RecordBatch] = []
        self.done = False

    def below(self, hi: int) -> list[pa.RecordBatch]:
        """The hits of query ids below `hi` (the file's next ones)."""
        while not self.done and (not self.pending or self.pending[-1].column(0)[-1].as_py() < hi):
            batch = next(self.batches, None)
            if batch is None:
                self.done = True
            elif batch.num_rows:
                self.pending.append(batch)
        out = []
        while self.pending:
            batch = self.pending[0]
            cut = int(np.searchsorted(batch.column(0).to_numpy(), hi))
            if cut < batch.num_rows:
                out.append(batch.slice(0, cut))
                self.pending[0] = batch.slice(cut)
                break
            out.append(self.pending.pop(0))
        return out


def merge_topk_files(paths: list, k: int, n_queries: int, out, round_rows: int = ROUND_ROWS, max_open: int = MAX_OPEN) -> int:
    """The global top-k of queries 0..n_queries-1 from per-shard hits files sorted by query id
    (exact: each shard kept its own top-k; ties go to the lower doc id), written to `out`. Returns
    the number of queries with at least one hit."""
    paths = [Path(p) for p in paths]
    with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=".merge-") as tmp:
        if len(paths) > max_open:  # merge groups first: no more than max_open files open at once
            groups = [paths[i : i + max_open] for i in range(0, len(paths), max_open)]
            paths = [Path(tmp) / f"group-{g}.parquet" for g in range(len(groups))]
            for group, path in zip(groups, paths):
                merge_topk_files(group, k, n_queries, path, round_rows, max_open)
        cursors = [_Cursor(p) for p in paths]
        answered = 0
        per_round = max(1, round_rows // (k * max(len(paths), 1)))
        with atomic_path(out) as target, pq.ParquetWriter(target, HITS_SCHEMA, compression="zstd") as writer:
            for lo in range(0, max(n_queries, 1), per_round):
                parts = pa.Table.from_batches([b for c in cursors for b in c.below(lo + per_round)], schema=HITS_SCHEMA.remove(3))
                q, d, s = (parts.column(i).to_numpy() for i in range(3))
                rows, rank = top_rows(q, d, s, k)
                answered += len(np.unique(q[rows]))
                writer.write_table(pa.table([q[rows], d[rows], s[rows], rank], schema=HITS_SCHEMA), row_group_size=CURSOR_ROWS)
    return answered


def retrieval_warnings(task: str, answered: int, n_queries: int, k: int, num_docs: int, analyzer: str) -> list[str]:
    """Silent ways for retrieval to go wrong, named with the key to change: most queries finding
    nothing (TLM quietly becomes task_only), and a K larger than the corpus."""
    warnings = []
    if n_queries and answered < n_queries / 2:
        hint = (
            "The texts may be written without spaces (Chinese, Japanese, Thai): set `bm25.analyzer: auto`. "
            if analyzer == "word"
            else ""
        )
        warnings.append(
            f"tasks.{task}: only {answered} of {n_queries} queries retrieved any document, so S holds little and "
            f"the tlm run is close to task_only. {hint}Fix: check that the corpus shares the task's language and "
            "vocabulary (and `bm25.stopwords`, `bm25.stemmer`, `query_mode`)."
        )
    if k > num_docs:
        warnings.append(
            f"tasks.{task}.top_k = {k} is more than the corpus's {num_docs} documents: every query gets at most "
            f"{num_docs}. Fix: lower `tasks.{task}.top_k` or use a larger corpus."
        )
    return warnings
