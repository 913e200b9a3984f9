"""Dense and hybrid retrieval (tlm.retrieval.dense, tlm.retrieval.encoder): exact sharded top-K
against brute force, the encoder's pooling against an unbatched reference, fusion, bad input, and
the workflow planning, running and caching the `dense` and `hybrid` retrievers."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import smk, tiny_config, tiny_pretrained_encoder, write_config
from test_reruns import planned

from tlm.io import TLMInputError
from tlm.retrieval.dense import (
    check_shards,
    fuse,
    quantize,
    search_embeddings,
    search_shard,
    write_queries,
    write_shard,
)
from tlm.retrieval.encoder import check_budget, embed, load_encoder
from tlm.retrieval.merge import merge_topk_files

SHARDS = ("00000", "00001", "00002")


def brute_force(queries: np.ndarray, docs: np.ndarray, k: int) -> pd.DataFrame:
    """Every score in int64 (exact), each query's best k by score then the lower doc id."""
    scores = queries.astype(np.int64) @ docs.astype(np.int64).T
    rows = []
    for q, s in enumerate(scores):
        order = sorted(range(len(s)), key=lambda d: (-s[d], d))[:k]
        rows += [(q, d, s[d] / 127**2, r + 1) for r, d in enumerate(order)]
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "score", "rank"])


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(300, 16)).astype(np.float32)
    docs[100:140] = docs[0]  # ties: 41 copies of one document
    docs[250:] = docs[1]
    queries = rng.normal(size=(25, 16)).astype(np.float32)
    queries[:5] = docs[0]  # queries whose best documents all tie
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return quantize(norm(queries), "int8"), quantize(norm(docs), "int8")


def test_sharded_dense_topk_equals_brute_force_ties_included(tmp_path, vectors):
    queries, docs = vectors
    k = 12
    meta = {"encoder": "e", "max_length": 8, "dtype": "int8", "pooling": "mean"}
    write_queries(tmp_path / "queries.npy", queries, meta)
    hits = []
    for i, (lo, hi) in enumerate(((0, 120), (120, 130), (130, 300))):
        write_shard(
            tmp_path / f"shard-{i}", docs[lo:hi], {**meta, "first_doc_id": lo, "seconds": 0}
        )
        hits.append(tmp_path / f"hits-{i}.parquet")
        search_shard(tmp_path / f"shard-{i}", tmp_path / "queries.npy", k, hits[-1])
    merge_topk_files(hits, k, len(queries), tmp_path / "topk.parquet")
    got = pd.read_parquet(tmp_path / "topk.parquet")
    want = brute_force(queries, docs, k)
    assert (
        got[["query_id", "doc_id", "rank"]].values.tolist()
        == want[["query_id", "doc_id", "rank"]].values.tolist()
    )
    assert np.array_equal(got.score.to_numpy(), want.score.to_numpy().astype(np.float32))
    assert (got[got.query_id < 5].score == got.score.max()).sum() == 5 * k  # tied lists, lowest ids


def test_blocked_search_equals_one_block(vectors):
    queries, docs = vectors
    one = search_embeddings(queries, docs, 7, doc_block=len(docs), query_block=len(queries))
    blocked = search_embeddings(queries, docs, 7, doc_block=13, query_block=4)
    pd.testing.assert_frame_equal(one, blocked)


def test_float16_search_finds_the_brute_force_neighbours():
    rng = np.random.default_rng(1)
    docs = quantize(rng.normal(size=(500, 24)).astype(np.float32), "float16")
    queries = quantize(rng.normal(size=(10, 24)).astype(np.float32), "float16")
    hits = search_embeddings(queries, docs, 5, doc_block=64)
    exact = queries.astype(np.float64) @ docs.astype(np.float64).T
    assert (
        hits.doc_id.to_numpy().reshape(10, 5).tolist() == np.argsort(-exact, axis=1)[:, :5].tolist()
    )


def test_fusion_rerank_and_rrf():
    bm25 = pd.DataFrame(
        {"query_id": [0, 0, 0], "doc_id": [5, 6, 7], "score": [3.0, 2, 1], "rank": [1, 2, 3]}
    )
    dense = pd.DataFrame(
        {"query_id": [0, 0], "doc_id": [7, 9], "score": [0.9, 0.8], "rank": [1, 2]}
    )
    rerank = fuse(bm25, dense, 2, "rerank", 60, lambda q, d: np.array([0.1, 0.5, 0.5]))
    assert rerank.doc_id.tolist() == [6, 7]  # the tie to the lower doc id, BM25's first dropped
    rrf = fuse(bm25, dense, 3, "rrf", 60, None)
    # 7: 1/63 + 1/61 beats 5: 1/61; 5 beats 9 (1/62) beats 6 (1/62, higher id)
    assert rrf.doc_id.tolist() == [7, 5, 6] and rrf["rank"].tolist() == [1, 2, 3]


def test_encoder_mean_pools_and_normalises_like_one_text_at_a_time(tmp_path):
    path = tiny_pretrained_encoder(tmp_path / "enc")
    encoder = load_encoder(str(path), max_length=24)
    texts = [
        "a short one",
        "a much longer text than the others, cut at the max length " * 3,
        "mid sized text",
    ]
    got = embed(encoder, texts, batch_size=2)  # length-sorted, padded batches
    for text, row in zip(texts, got):
        ids = encoder.tokenizer(text, truncation=True, max_length=24, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder.model(**ids).last_hidden_state[0]
        want = hidden.mean(0) / hidden.mean(0).norm()
        np.testing.assert_allclose(row, want.numpy(), atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1)


def test_bad_encoders_are_named_by_their_key(tmp_path):
    with pytest.raises(TLMInputError, match=r"dense.encoder = .*neither a directory"):
        load_encoder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TLMInputError, match=r"dense.encoder = .*no config.json"):
        load_encoder(str(tmp_path / "empty"))
    path = tiny_pretrained_encoder(tmp_path / "enc")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (path / name).unlink(missing_ok=True)
    with pytest.raises(TLMInputError, match=r"dense.encoder = .*tokenizer"):
        load_encoder(str(path))


def test_shards_of_another_encoder_are_refused(tmp_path):
    meta = {
        "encoder": "e",
        "max_length": 8,
        "dtype": "int8",
        "pooling": "mean",
        "first_doc_id": 0,
        "seconds": 0,
    }
    write_shard(tmp_path / "shard-0", np.zeros((3, 16), np.int8), meta)
    write_shard(tmp_path / "shard-1", np.zeros((3, 32), np.int8), {**meta, "encoder": "other"})
    with pytest.raises(TLMInputError, match=r"dense.encoder: .*shard-1.*dim 32 \(not 16\)"):
        check_shards([tmp_path / "shard-0", tmp_path / "shard-1"])


def test_a_corpus_over_the_cpu_budget_is_refused_before_embedding(tmp_path):
    encoder = load_encoder(str(tiny_pretrained_encoder(tmp_path / "enc")))
    with pytest.raises(
        TLMInputError, match=r"dense.max_hours = 1e-06: .*10,000,000 documents.*resources.gpu"
    ):
        check_budget(encoder, ["some text"] * 16, 10_000_000, 1e-6, 8)
    check_budget(encoder, ["some text"] * 16, 10, 1.0, 8)  # within budget: nothing raised


@pytest.fixture(scope="module")
def dense_workflow(tmp_path_factory):
    """The tiny workflow with dense, hybrid (and a dense run cut to K = 2) beside tlm, run to S and
    the dense run's model."""
    tmp = tmp_path_factory.mktemp("dense")
    cfg = tiny_config(tmp)
    del cfg["tasks"]["demo"]["predict"]
    cfg["runs"] = {
        "tlm": {"external": "bm25"},
        "dense": {"external": "dense"},
        "dense_k2": {"external": "dense", "top_k": 2},
        "hybrid": {"external": "hybrid"},
    }
    cfg["dense"] = {"encoder": str(tmp / "encoder")}
    cfg["hybrid"] = {"candidates": 10}
    write_config(tmp, cfg)
    smk(
        tmp,
        "results/metrics/demo/dense/seed0.json",
        "results/retrieval/demo/hybrid.parquet",
        "results/models/demo/tokens/dense-k2",
    )
    return tmp, cfg


def test_the_workflow_runs_dense_and_hybrid(dense_workflow):
    tmp, _ = dense_workflow
    r = tmp / "results/retrieval/demo"
    queries = len(pd.read_parquet(tmp / "results/tasks/demo/train.parquet"))
    dense = pd.read_parquet(r / "dense/dense-topk.parquet")
    assert len(dense) == 5 * queries and dense["rank"].max() == 5
    s = pd.read_parquet(r / "dense.parquet")
    assert set(s.doc_id) == set(dense.doc_id) and s.best_rank.min() == 1
    hybrid = pd.read_parquet(r / "hybrid.parquet")
    candidates = pd.read_parquet(r / "hybrid/bm25-topk.parquet")
    assert set(hybrid.doc_id) <= set(candidates.doc_id) and candidates["rank"].max() == 10
    assert (tmp / "results/metrics/demo/dense/seed0.json").exists()
    assert "Nothing to be done" in smk(tmp, "-n", "results/retrieval/demo/dense.parquet").stdout


def test_a_stale_shard_of_another_encoder_stops_the_merge(dense_workflow, tmp_path):
    tmp, _ = dense_workflow
    shard = tmp / "results/dense/shard-00001"
    shutil.copytree(shard, tmp_path / "keep")
    meta = (shard / "meta.json").read_text()
    (shard / "meta.json").write_text(meta.replace('"dim": 32', '"dim": 48'))
    try:
        proc = smk(tmp, "--forcerun", "dense_manifest", "results/dense/manifest.json", check=False)
        assert proc.returncode != 0
        log = (tmp / "logs/dense_manifest.log").read_text()
        assert "dense.encoder" in log and "shard-00001" in log and "delete" in log
    finally:
        shutil.rmtree(shard)
        shutil.copytree(tmp_path / "keep", shard)
        smk(tmp, "--forcerun", "dense_manifest", "results/dense/manifest.json")


def dense_retrieval(ranking: str) -> set:
    return {("dense_search", "task=demo", f"ranking={ranking}", f"shard={s}") for s in SHARDS} | {
        ("dense_merge", "task=demo", f"ranking={ranking}")
    }


def test_a_new_k_searches_again_without_embedding(dense_workflow):
    tmp, cfg = dense_workflow
    new = {**cfg, "tasks": {"demo": {**cfg["tasks"]["demo"], "top_k": 4}}}
    try:
        jobs = planned(tmp, new)
    finally:
        write_config(tmp, cfg)
    assert not {j for j in jobs if j[0] in ("embed_shard", "embed_queries", "dense_manifest")}
    assert dense_retrieval("dense") <= jobs and ("select_dense", "task=demo") in jobs


@pytest.mark.parametrize("change", [{"max_length": 16}, {"dtype": "float16"}])
def test_a_new_encoder_setting_embeds_again(dense_workflow, change):
    tmp, cfg = dense_workflow
    new = {**cfg, "dense": {**cfg["dense"], **change}}
    try:
        jobs = planned(tmp, new)
    finally:
        write_config(tmp, cfg)
    embedding = {("embed_shard", f"shard={s}") for s in SHARDS} | {
        ("embed_queries", "task=demo"),
        ("dense_manifest",),
    }
    assert embedding | dense_retrieval("dense") | dense_retrieval("hybrid") <= jobs
    assert not {j for j in jobs if j[0] in ("retrieve", "bm25_candidates", "count_terms")}


def test_model_cards_say_what_dense_and_hybrid_s_are():
    from test_model_card import card_text

    assert (
        "- external data S: the top-5 neighbours of each training example by the inner product of "
        "L2-normalised sentence embeddings" in card_text(external="dense")
    )
    assert "the top-5 of each training example by BM25 and sentence embeddings together" in (
        card_text(external="hybrid")
    )
