"""The global top-k of the shards' top-k lists, streamed: no job holds more than a round of hits,
whatever the number of shards and queries.

* `merge_topk`: in memory, of a few shards' hits (tests, benchmarks).
* `merge_topk_files`: a k-way merge of the shards' hits files (sorted by query id), in rounds of
  query ids: each round reads from every shard the hits of its queries (a cursor per file, each
  read once) and keeps the global top-k. Over `MAX_OPEN` shards, groups are merged first (two
  levels). (S is then fetched shard by shard: tlm.select.)
* `retrieval_warnings`: what a user must hear of a merge (most queries without a hit, K over the
  corpus's size).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tlm.io import atomic_path

HITS_COLUMNS = {"query_id": "int64", "doc_id": "int64", "score": "float32", "rank": "int32"}
HITS_SCHEMA = pa.schema(
    [
        ("query_id", pa.int64()),
        ("doc_id", pa.int64()),
        ("score", pa.float32()),
        ("rank", pa.int32()),
    ]
)
ROUND_ROWS = 500_000  # hits per merge round (with the sort's temporaries, ~50 MB)
MAX_OPEN = 128  # hits files open at once in one merge (~0.75 MB each)
CURSOR_ROWS = 16_384  # hits files are written in row groups of this size: a cursor holds one


def top_rows(q: np.ndarray, d: np.ndarray, s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Of hits (query id, doc id, score), the positions of each query's best k, by score then the
    lower doc id, in (query, rank) order, and their 1-based ranks."""
    order = np.lexsort((d, -s, q))
    q = q[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    rank = np.arange(len(q)) - np.repeat(starts, np.diff(np.r_[starts, len(q)])) + 1
    keep = rank <= k
    return order[keep], rank[keep].astype(np.int32)


def merge_topk(hits: list[pd.DataFrame], k: int) -> pd.DataFrame:
    """Global top-k per query from per-shard top-k lists (exact: each shard kept its own top-k)."""
    allhits = pd.concat(hits, ignore_index=True)
    rows, rank = top_rows(
        allhits.query_id.to_numpy(), allhits.doc_id.to_numpy(), allhits.score.to_numpy(), k
    )
    top = allhits.iloc[rows].reset_index(drop=True)
    top["rank"] = rank
    return top.astype(HITS_COLUMNS)


class _Cursor:
    """A hits file read forward in query-id order, a row group at a time (kept as Arrow batches:
    their memory pool reuses what a round frees, where many numpy arrays would fragment the heap)."""

    def __init__(self, path):
        # no pre-buffering: it would hold whole column chunks (3.6 MB a file instead of 0.75)
        reader = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)
        self.batches = reader.iter_batches(
            batch_size=CURSOR_ROWS, columns=["query_id", "doc_id", "score"]
        )
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


def merge_topk_files(
    paths: list, k: int, n_queries: int, out, round_rows: int = ROUND_ROWS, max_open: int = MAX_OPEN
) -> int:
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
        with (
            atomic_path(out) as target,
            pq.ParquetWriter(target, HITS_SCHEMA, compression="zstd") as writer,
        ):
            for lo in range(0, max(n_queries, 1), per_round):
                parts = pa.Table.from_batches(
                    [b for c in cursors for b in c.below(lo + per_round)],
                    schema=HITS_SCHEMA.remove(3),
                )
                q, d, s = (parts.column(i).to_numpy() for i in range(3))
                rows, rank = top_rows(q, d, s, k)
                answered += len(np.unique(q[rows]))
                writer.write_table(
                    pa.table([q[rows], d[rows], s[rows], rank], schema=HITS_SCHEMA),
                    row_group_size=CURSOR_ROWS,
                )
    return answered


def retrieval_warnings(
    task: str, answered: int, n_queries: int, k: int, num_docs: int, analyzer: str
) -> list[str]:
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
