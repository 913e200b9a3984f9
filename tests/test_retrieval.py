"""Retrieval streamed at scale: a task's queries searched shard by shard in batches, a k-way merge
in rounds, global statistics merged range by range; the same results as in memory, in memory that
does not grow with the number of shards or queries."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import python
from test_bm25 import build

from tlm.retrieval.analyzer import Analyzer
from tlm.retrieval.index import merge_stats
from tlm.retrieval.merge import (
    CURSOR_ROWS,
    HITS_SCHEMA,
    merge_topk,
    merge_topk_files,
    retrieval_warnings,
)
from tlm.retrieval.search import retrieve_shard, search_shard


def random_hits(rng, n_queries, k, shard):
    """A shard's top-k of every query, sorted as retrieve writes them (scores with many ties)."""
    q = np.repeat(np.arange(n_queries), k)
    d = shard * 1_000_000 + rng.integers(0, 1_000_000, len(q))
    s = rng.integers(0, 50, len(q)).astype(np.float32) / 4
    frame = pd.DataFrame({"query_id": q, "doc_id": d, "score": s})
    frame = frame.sort_values(
        ["query_id", "score", "doc_id"], ascending=[True, False, True], kind="stable"
    )
    frame["rank"] = np.tile(np.arange(1, k + 1, dtype=np.int32), n_queries)
    return frame.reset_index(drop=True).astype(
        {"query_id": "int64", "doc_id": "int64", "score": "float32", "rank": "int32"}
    )


def test_streamed_merge_equals_the_in_memory_merge(tmp_path):
    rng = np.random.default_rng(0)
    hits = [random_hits(rng, 300, 7, s) for s in range(9)]
    paths = []
    for s, h in enumerate(hits):
        paths.append(tmp_path / f"hits-{s}.parquet")
        pq.write_table(pa.Table.from_pandas(h, schema=HITS_SCHEMA, preserve_index=False), paths[-1])
    expected = merge_topk(hits, 7)
    # rounds of a few queries, and groups of 4 files merged first: three levels of the same merge
    assert (
        merge_topk_files(paths, 7, 300, tmp_path / "topk.parquet", round_rows=200, max_open=4)
        == 300
    )
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "topk.parquet"), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(p.name for p in paths), "topk.parquet"]
    ), "no temporaries"


def test_a_shard_searched_in_batches_equals_one_search(tmp_path, demo_corpus_texts):
    (index,) = build(tmp_path, demo_corpus_texts, 1)
    analyzer = Analyzer(stemmer="english")
    texts = demo_corpus_texts[:300]
    pd.DataFrame({"query_id": np.arange(len(texts), dtype=np.int64), "text": texts}).to_parquet(
        tmp_path / "queries.parquet"
    )
    retrieve_shard(
        index, tmp_path / "queries.parquet", 12, tmp_path / "hits.parquet", analyzer, batch_size=64
    )
    expected = search_shard(index, [analyzer(t) for t in texts], 12)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "hits.parquet"), expected)
    assert pq.read_metadata(tmp_path / "hits.parquet").num_rows == len(expected) > 64 * 12, (
        "several batches"
    )


def test_global_statistics_merged_by_ranges_equal_one_merge(
    tmp_path, demo_corpus_texts, monkeypatch
):
    monkeypatch.setattr(
        "tlm.retrieval.index.TERMS_ROW_GROUP", 1000
    )  # the ranges' bounds come from the row groups
    build(tmp_path, demo_corpus_texts, 3)
    counts = [tmp_path / "idx" / f"counts-{s}" for s in range(3)]
    one = merge_stats(counts, tmp_path / "one")
    many = merge_stats(counts, tmp_path / "many", range_rows=500)
    assert one == many and one["num_terms"] > 5000
    a, b = (
        pd.read_parquet(tmp_path / "one" / "df.parquet"),
        pd.read_parquet(tmp_path / "many" / "df.parquet"),
    )
    pd.testing.assert_frame_equal(a, b)
    assert (
        a.term.is_monotonic_increasing
        and a.term.is_unique
        and pq.read_metadata(tmp_path / "many" / "df.parquet").num_row_groups > 5
    )


MERGE_PEAK = """
import json, sys
from tlm.retrieval.merge import merge_topk_files
paths = sys.argv[3:]
merge_topk_files(paths, int(sys.argv[1]), int(sys.argv[2]), paths[0] + f".topk-{len(paths)}")
print(json.dumps(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_merge_memory_does_not_grow_with_shards_or_queries(tmp_path):
    """The k-way merge holds a round of hits (500k rows) and a row group per open file (128 at most): 16x
    the shards or 8x the queries (hits from 1.6M to 26M rows, 0.5 GB) add well under 100 MB to its
    peak RSS."""
    rng = np.random.default_rng(0)
    small = random_hits(rng, 20_000, 20, 0)
    large = pd.concat(
        [small.assign(query_id=small.query_id + 20_000 * i) for i in range(8)], ignore_index=True
    )
    files = {}
    for name, frame in (("small", small), ("large", large)):
        files[name] = tmp_path / f"{name}.parquet"
        pq.write_table(
            pa.Table.from_pandas(frame, schema=HITS_SCHEMA, preserve_index=False),
            files[name],
            row_group_size=CURSOR_ROWS,
        )
    peak = {}
    for shards, name, queries in (
        (4, "small", 20_000),
        (64, "small", 20_000),
        (4, "large", 160_000),
    ):
        args = ["20", str(queries), *[str(files[name])] * shards]
        peak[(shards, queries)] = json.loads(
            subprocess.run(
                [python(), "-c", MERGE_PEAK, *args], capture_output=True, text=True, check=True
            ).stdout
        )
    assert peak[(64, 20_000)] - peak[(4, 20_000)] < 100, peak
    assert peak[(4, 160_000)] - peak[(4, 20_000)] < 100, peak


def test_silent_retrieval_failures_are_named():
    """Most queries without a hit (an unspaced script under the word analyzer), K over the corpus."""
    [few] = retrieval_warnings("zh", 10, 100, 50, 10_000, "word")
    assert (
        "tasks.zh: only 10 of 100 queries retrieved any document" in few
        and "`bm25.analyzer: auto`" in few
    )
    [big] = retrieval_warnings("t", 90, 100, 5000, 2500, "auto")
    assert "tasks.t.top_k = 5000 is more than the corpus's 2500 documents" in big and "Fix:" in big
    assert retrieval_warnings("t", 60, 100, 50, 2500, "auto") == []
