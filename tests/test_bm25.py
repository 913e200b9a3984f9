"""BM25: exact sharded search, scores against an independent reference, bm25s compatibility, edge cases."""

import json
import math

import bm25s
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlm.corpus import SHARD_SCHEMA
from tlm.io import TLMInputError
from tlm.retrieval import INDEX_LAYOUT
from tlm.retrieval.analyzer import Analyzer
from tlm.retrieval.index import build_shard_index, count_terms, merge_stats, quantize_impacts
from tlm.retrieval.kernel import BLOCK, KERNEL_LAYOUT
from tlm.retrieval.merge import merge_topk
from tlm.retrieval.search import ShardIndex, search_shard, top_k


def reference_bm25(docs: list[list[str]], query: list[str], k1=1.5, b=0.75) -> np.ndarray:
    """Textbook BM25 (Lucene idf, no (k1+1) factor), written independently of tlm.retrieval."""
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    out = np.zeros(n)
    for term in query:
        df = sum(term in d for d in docs)
        if df == 0:
            continue
        w = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.count(term)
            out[i] += w * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
    return out


def build(tmp_path, texts, n_shards, analyzer=Analyzer(), name="idx"):
    """Index `texts` in `n_shards` contiguous shards; return the shard index directories."""
    root = tmp_path / name
    bounds = np.linspace(0, len(texts), n_shards + 1).astype(int)
    count_dirs = []
    for s in range(n_shards):
        shard = root / f"shard-{s}.parquet"
        shard.parent.mkdir(parents=True, exist_ok=True)
        ids = list(range(bounds[s], bounds[s + 1]))
        pq.write_table(
            pa.table({"doc_id": ids, "text": [texts[i] for i in ids]}, schema=SHARD_SCHEMA), shard
        )
        count_terms(shard, analyzer, root / f"counts-{s}")
        count_dirs.append(root / f"counts-{s}")
    merge_stats(count_dirs, root / "stats")
    for s in range(n_shards):
        build_shard_index(root / f"counts-{s}", root / "stats", root / f"index-{s}")
    return [root / f"index-{s}" for s in range(n_shards)]


def search(index_dirs, queries, k, analyzer=Analyzer()):
    tokens = [analyzer(q) for q in queries]
    return merge_topk([search_shard(d, tokens, k) for d in index_dirs], k)


def test_scores_match_reference_and_sharding_is_exact(tmp_path, demo_corpus_texts):
    texts = demo_corpus_texts[:600]
    analyzer = Analyzer()
    queries = texts[:5] + ["compiler for the python language", "a small dog barks"]
    one = search(build(tmp_path, texts, 1, name="one"), queries, 10)
    for n in (2, 7):
        many = search(build(tmp_path, texts, n, name=f"n{n}"), queries, 10)
        pd.testing.assert_frame_equal(one, many)
    docs = [analyzer(t) for t in texts]
    for qid, q in enumerate(queries):
        ref = reference_bm25(docs, analyzer(q))
        hits = one[one.query_id == qid]
        np.testing.assert_allclose(hits.score, ref[hits.doc_id], rtol=1e-5)
        expected = sorted(np.flatnonzero(ref > 0), key=lambda i: (-ref[i], i))[:10]
        assert ref[hits.doc_id].round(4).tolist() == ref[expected].round(4).tolist()


def test_index_as_a_bm25s_index_gives_bm25s_scores(tmp_path, demo_corpus_texts):
    """The exhaustive reference, the shard as bm25s's CSC decoded from the forward index, scores as
    bm25s indexing the texts itself."""
    texts = demo_corpus_texts[:300]
    [index] = build(tmp_path, texts, 1, Analyzer(stopwords="none"))
    ours = ShardIndex(index).retriever
    theirs = bm25s.BM25(method="lucene")
    theirs.index(bm25s.tokenize(texts, stopwords=None, show_progress=False), show_progress=False)
    query = bm25s.tokenize(
        ["the library for audio files"], stopwords=None, show_progress=False, return_ids=False
    )[0]
    np.testing.assert_allclose(ours.get_scores(query), theirs.get_scores(query), rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    docs=st.lists(
        st.lists(
            st.sampled_from(["ab", "cd", "ef", "gh", "ij", "kl", "mn"]), min_size=0, max_size=8
        ),
        min_size=1,
        max_size=30,
    ),
    query=st.lists(st.sampled_from(["ab", "cd", "ef", "gh", "zz"]), min_size=1, max_size=4),
    n_shards=st.integers(1, 4),
    k=st.integers(1, 40),
)
def test_random_corpora_sharded_equals_exhaustive(tmp_path_factory, docs, query, n_shards, k):
    texts = [" ".join(d) for d in docs]
    n_shards = min(n_shards, len(texts))
    hits = search(
        build(tmp_path_factory.mktemp("h"), texts, n_shards, Analyzer(stopwords="none")),
        [" ".join(query)],
        k,
    )
    ref = reference_bm25([t.split() for t in texts], query).astype(np.float32)
    expected = sorted(np.flatnonzero(ref > 0), key=lambda i: (-ref[i], i))[:k]
    # float32 sums can differ in the last bit from the float64 reference: compare rank-wise scores,
    # and require the exact doc ids wherever the reference has no near-tie
    np.testing.assert_allclose(hits.score, ref[expected], rtol=1e-5)
    assert hits["rank"].tolist() == list(range(1, len(expected) + 1))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 30), query_len=st.integers(1, 40))
def test_search_equals_exhaustive_on_zipfian_corpora(tmp_path_factory, seed, k, query_len):
    """Enough documents, ties and long queries for the kernel's integer gate to act: top-k must not change."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(200)])
    p = 1 / np.arange(1, len(vocab) + 1)
    texts = [" ".join(rng.choice(vocab, rng.integers(1, 25), p=p / p.sum())) for _ in range(400)]
    queries = [list(rng.choice(vocab, rng.integers(1, query_len + 1))) for _ in range(20)]
    [index_dir] = build(tmp_path_factory.mktemp("z"), texts, 1, Analyzer(stopwords="none"))
    index = ShardIndex(index_dir)
    reference = index.search_exhaustive(queries, k)
    pd.testing.assert_frame_equal(index.search(queries, k), reference)
    pd.testing.assert_frame_equal(index.search(queries, k, threads=2, batch_size=7), reference)


def test_search_across_kernel_blocks_with_mass_ties(tmp_path):
    """More documents than several of the kernel's cache blocks, thousands of exact ties around the
    k-th score (the candidate list must grow) and hits in every block: still the exhaustive top-k."""
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(300)])
    texts = [" ".join(rng.choice(vocab, rng.integers(1, 12))) for _ in range(3 * BLOCK + 123)]
    for i in rng.choice(len(texts), 5000, replace=False):
        texts[i] = "w1 w2 w3"  # identical documents: identical scores
    texts[-1] = "rare"  # the shard's top score: its impact is the largest, 65535
    [index_dir] = build(tmp_path, texts, 1, Analyzer(stopwords="none"))
    index = ShardIndex(index_dir)
    # the last two queries are so long (40,000 terms) that int32 sums could overflow; the repeated
    # term's 40,000 x 65535 does overflow them
    queries = [
        ["w1", "w2", "w3"],
        ["w1"],
        list(rng.choice(vocab, 30)),
        ["w299", "w7", "w1", "w1"],
        list(rng.choice(vocab, 40_000)),
        ["rare"] * 40_000,
    ]
    for k in (1, 50, 3000):
        reference = index.search_exhaustive(queries, k)
        pd.testing.assert_frame_equal(index.search(queries, k), reference)
    assert (reference.doc_id >= 2 * BLOCK).any()


def test_repeated_query_terms_count_as_often_as_they_occur(tmp_path, demo_corpus_texts):
    """The kernel reads a repeated term once and multiplies its impacts; scores stay bm25s's sums."""
    [index_dir] = build(tmp_path, demo_corpus_texts[:2000], 1)
    index = ShardIndex(index_dir)
    once, twice = index.search([["linux"], ["linux", "linux"]], 10).groupby("query_id")
    assert len(once[1]) == 10
    np.testing.assert_array_equal(twice[1].score.to_numpy(), 2 * once[1].score.to_numpy())
    queries = [
        ["library", "linux", "file", "linux", "python", "linux", "file"],
        ["file", "linux", "linux", "library", "python"],
    ]
    pd.testing.assert_frame_equal(index.search(queries, 30), index.search_exhaustive(queries, 30))


def test_threads_and_batches_give_the_single_threaded_result(tmp_path, demo_corpus_texts):
    analyzer = Analyzer()
    dirs = build(tmp_path, demo_corpus_texts, 2)
    queries = [analyzer(t) for t in demo_corpus_texts[:150]] + [
        analyzer(" ".join(demo_corpus_texts[i : i + 5])) for i in range(50)
    ]
    for d in dirs:
        index = ShardIndex(d)
        one = index.search(queries, 20)
        pd.testing.assert_frame_equal(one, index.search_exhaustive(queries, 20))
        pd.testing.assert_frame_equal(index.search(queries, 20, threads=2, batch_size=16), one)
        pd.testing.assert_frame_equal(search_shard(d, queries, 20, threads=2), one)


def test_impacts_round_scores_up_by_less_than_one_unit():
    scores = np.random.default_rng(0).uniform(1e-4, 30, 100_000).astype(np.float32)
    excess = quantize_impacts(scores) - scores.astype(np.float64) * (65534 / float(scores.max()))
    assert excess.min() > 0 and excess.max() <= 1


def test_an_index_of_an_older_layout_gets_a_clear_error(tmp_path, demo_corpus_texts):
    [index_dir] = build(tmp_path, demo_corpus_texts[:20], 1)
    meta = json.loads((index_dir / "global_stats.json").read_text())
    kernel = meta.pop("kernel")
    for older in (
        {**meta, "kernel_block": kernel["block"]},  # as layout 3 wrote it
        {**meta, "kernel": {key: v for key, v in kernel.items() if key != "format"}},  # layout 4
        {**meta, "kernel": {**kernel, "format": INDEX_LAYOUT + 1}},
    ):
        (index_dir / "global_stats.json").write_text(json.dumps(older))
        with pytest.raises(
            TLMInputError,
            match=r"global_stats.json: not a tlm index of this version.*Fix: rebuild.*"
            "--forcerun build_index",
        ):
            search_shard(index_dir, [["linux"]], 5)


def test_forward_index_escapes_large_term_gaps_and_frequencies(tmp_path):
    """Term ids 65,535 or more apart within a document, term frequencies of 256 or more and a
    document longer than 65,535 words (its length no uint16): escaped or widened, still exact."""
    rng = np.random.default_rng(0)
    rare = [f"r{i}" for i in range(80_000)]  # each in one document: ids past 65,535 by df
    texts = [
        " ".join(["common"] * int(rng.integers(1, 4)) + rare[i : i + 40])
        for i in range(0, len(rare), 40)
    ]
    texts[3] += " often" * 300  # tf 300: one byte holds no more than 255
    texts[7] += " often" * 255 + " huge" * 70_000  # tf 255 (no escape) and 70,000; length > 65,535
    texts[9] += " common" * 256
    [index_dir] = build(tmp_path, texts, 1, Analyzer(stopwords="none"))
    index = ShardIndex(index_dir)
    layout = dict(zip(KERNEL_LAYOUT, index.layout))
    assert len(layout["term_escape_at"]) > 100 and len(layout["tf_escape_at"]) == 3
    assert layout["doc_len"].dtype == np.uint32 and layout["doc_terms"].dtype == np.uint16
    queries = [
        ["often"],
        ["huge", "often", "common"],
        ["common", "r79999", "r40", "r41", "r65536", "often"],
        [rare[i] for i in rng.choice(len(rare), 50)] + ["common", "often"],
    ]
    reference = index.search_exhaustive(queries, 5)
    pd.testing.assert_frame_equal(index.search(queries, 5), reference)
    docs = [t.split() for t in texts]
    for qid, query in enumerate(queries):
        ref = reference_bm25(docs, query)
        hits = reference[reference.query_id == qid]
        np.testing.assert_allclose(hits.score, ref[hits.doc_id], rtol=1e-5)
    assert reference[reference.query_id == 0].doc_id.tolist() == [3, 7]


def test_ties_break_by_lower_doc_id():
    scores = np.array([0.0, 2.0, 1.0, 2.0, 2.0, 0.5], dtype=np.float32)
    assert top_k(scores, 2).tolist() == [1, 3]
    assert top_k(scores, 10).tolist() == [1, 3, 4, 2, 5]  # zero scores are not hits


def test_edge_case_queries(tmp_path, demo_corpus_texts):
    texts = demo_corpus_texts[:50]
    dirs = build(tmp_path, texts, 2)
    longest = max(texts, key=len)
    hits = search(dirs, ["", "the of and a", "zzzunseenword", longest * 3], k=1000)
    assert set(hits.query_id) == {3}, "empty, stopword-only and unknown queries have no hits"
    long_hits = hits[hits.query_id == 3]
    assert len(long_hits) <= len(texts)  # K larger than the corpus: every matching document once
    assert long_hits.doc_id.is_unique and long_hits.score.is_monotonic_decreasing
    assert long_hits.iloc[0].doc_id == texts.index(longest)


def test_count_terms_in_worker_processes_gives_the_same_postings(tmp_path, demo_corpus_texts):
    shard = tmp_path / "shard.parquet"
    pq.write_table(
        pa.table(
            {"doc_id": range(len(demo_corpus_texts)), "text": demo_corpus_texts},
            schema=SHARD_SCHEMA,
        ),
        shard,
    )
    analyzer = Analyzer(stemmer="english")
    count_terms(shard, analyzer, tmp_path / "one", batch_size=250)
    count_terms(shard, analyzer, tmp_path / "three", batch_size=250, processes=3)
    one, three = np.load(tmp_path / "one/postings.npz"), np.load(tmp_path / "three/postings.npz")
    for key in one.files:
        np.testing.assert_array_equal(one[key], three[key])
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "one/terms.parquet"),
        pd.read_parquet(tmp_path / "three/terms.parquet"),
    )


def test_analyzer_options():
    assert Analyzer()("The Cats and the Dogs") == ["cats", "dogs"]
    assert Analyzer()("Python 的中文") == ["python", "的中", "中文"], (
        "unspaced runs as character pairs"
    )
    assert Analyzer()("日本語 a 中") == ["日本", "本語", "中"]
    assert Analyzer(analyzer="word")("Python 的中文") == ["python", "的中文"]
    assert Analyzer(stopwords="none", lowercase=False)("The Cats") == ["The", "Cats"]
    assert Analyzer(stemmer="english")("running cats") == ["run", "cat"]


def test_text_without_spaces_is_retrieved(tmp_path):
    """Chinese and Thai documents are found by queries that share words with them: with the word
    analyzer each sentence is one term and nothing is found."""
    docs = [
        "我喜欢学习中文和数学",
        "今天的天气很好",
        "机器学习需要大量数据",
        "ภาษาไทยเป็นภาษาที่สวยงาม",
        "the weather is fine",
    ]
    queries = ["我们学习数学", "天气好", "ภาษาไทย"]
    hits = search(build(tmp_path, docs, 2), queries, 1)
    assert hits.sort_values("query_id").doc_id.tolist() == [0, 1, 3]
    word = Analyzer(analyzer="word")
    assert search(build(tmp_path, docs, 2, word, name="word"), queries, 1, word).empty
