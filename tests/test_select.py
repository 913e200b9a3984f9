"""The external data S: union of top-K lists with best ranks, and the same-size random sample."""

import pandas as pd
import pyarrow.parquet as pq

from tlm.corpus import shard_corpus
from tlm.select import EXTERNAL_SCHEMA, select_external, select_random


def corpus(tmp_path):
    (tmp_path / "c.txt").write_text("".join(f"doc {i}\n" for i in range(20)))
    shard_corpus([str(tmp_path / "c.txt")], tmp_path / "corpus", shard_size=6)
    return tmp_path / "corpus"


def test_external_is_the_union_with_best_ranks(tmp_path):
    topk = pd.DataFrame(
        {
            "query_id": [0, 0, 1, 1],
            "doc_id": [3, 13, 13, 7],
            "score": [2.0, 1.0, 3.0, 1.0],
            "rank": [1, 2, 1, 2],
        }
    )
    topk.to_parquet(tmp_path / "topk.parquet")
    assert select_external(
        tmp_path / "topk.parquet", corpus(tmp_path), tmp_path / "ext.parquet"
    ) == (3, 16)
    docs = pd.read_parquet(tmp_path / "ext.parquet")
    assert docs.doc_id.tolist() == [3, 7, 13]
    assert docs.text.tolist() == ["doc 3", "doc 7", "doc 13"]
    assert docs.best_rank.tolist() == [1, 2, 1]
    assert pq.read_schema(tmp_path / "ext.parquet").equals(EXTERNAL_SCHEMA, check_metadata=False)


def test_random_sample_has_the_requested_size_and_is_seeded(tmp_path):
    c = corpus(tmp_path)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        select_random(5, c, tmp_path / f"{name}.parquet", seed=seed)
    a, b, other = (pd.read_parquet(tmp_path / f"{name}.parquet") for name in "abc")
    assert len(a) == 5 and a.doc_id.is_unique and (a.best_rank == 0).all()
    pd.testing.assert_frame_equal(a, b)
    assert a.doc_id.tolist() != other.doc_id.tolist()
    assert all(t == f"doc {i}" for i, t in zip(a.doc_id, a.text))
    assert select_random(100, c, tmp_path / "all.parquet", seed=0)[0] == 20  # capped at |D|
