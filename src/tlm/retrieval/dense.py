"""Dense and hybrid retrieval beside BM25 (the `dense` and `hybrid` rows of tlm.retrievers).

* Embeddings (tlm.retrieval.encoder computes them): one folder per corpus shard,
  results/dense/shard-{shard}/ with `embeddings.npy` (one L2-normalised row per document,
  memory-mapped) and `meta.json` (encoder, dims, dtype, max length, first doc id, rows). Rows are
  stored as int8 (x 127, rounded: 1 byte a dimension) or float16.
* `search_embeddings`: a shard's exact inner-product top-k of each query, numpy matmul in blocks
  of documents. With int8 every score is an integer sum of products (at most 127^2 x dims < 2^24),
  exact in float32 whatever the order of the sums, so blocked, sharded and brute-force searches
  give the same scores and the same ties (broken, as BM25's, by the lower doc id). Shards' top-k
  lists are merged with tlm.retrieval.merge like BM25's.
* `check_shards`: every shard embedded by the same encoder, at the same dims and dtype.
* S of `dense` is the union of the merged top-K lists (tlm.select.select_bm25, as for BM25), of
  `hybrid` the union of the fused lists (`select_hybrid`), each document with its best rank, so
  a run's smaller `top_k` cuts S. hybrid: BM25's top-N candidates
  re-scored by the dense model (`rerank`), or reciprocal rank fusion of BM25's and the dense
  top-N lists (`rrf`: sum over the lists of 1 / (rrf_k + rank)).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tlm.io import TLMInputError, arrow_table, atomic_path, read_json, write_json
from tlm.retrieval.merge import CURSOR_ROWS, HITS_COLUMNS, HITS_SCHEMA, top_rows
from tlm.select import best_ranks_of, write_documents

log = logging.getLogger(__name__)

INT8_SCALE = 127
DTYPES = {"int8": np.int8, "float16": np.float16}
DOC_BLOCK = 16_384  # documents scored at a time (x queries in a block: a float32 score matrix)
QUERY_BLOCK = 2_048


def quantize(embeddings: np.ndarray, dtype: str) -> np.ndarray:
    """Normalised float32 rows stored as `dtype`: int8 (x 127, rounded) or float16."""
    if dtype == "int8":
        return np.clip(np.rint(embeddings * INT8_SCALE), -INT8_SCALE, INT8_SCALE).astype(np.int8)
    return embeddings.astype(DTYPES[dtype])


def score_scale(dtype: str) -> float:
    """What a raw inner product of stored rows is divided by to be a cosine."""
    return float(INT8_SCALE**2) if dtype == "int8" else 1.0


def write_shard(out_dir, embeddings: np.ndarray, meta: dict) -> None:
    """One shard's embeddings and meta.json, atomically (a killed job leaves no folder)."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        np.save(tmp / "embeddings.npy", embeddings)
        write_json(
            {**meta, "rows": int(len(embeddings)), "dim": int(embeddings.shape[1])},
            tmp / "meta.json",
        )


def load_shard(shard_dir) -> tuple[np.ndarray, dict]:
    """A shard's embeddings (memory-mapped) and its meta."""
    shard_dir = Path(shard_dir)
    return np.load(shard_dir / "embeddings.npy", mmap_mode="r"), read_json(shard_dir / "meta.json")


ENCODER_KEYS = ("encoder", "max_length", "dtype", "pooling", "dim")


def check_shards(shard_dirs: list, queries_meta: dict | None = None) -> list[dict]:
    """The shards' metas, refused when two shards (or the queries) were embedded differently: a
    stale shard of another encoder would make inner products meaningless."""
    metas = [read_json(Path(d) / "meta.json") for d in shard_dirs]
    ref = queries_meta or (metas[0] if metas else {})
    for d, meta in zip(shard_dirs, metas):
        differs = {k: (meta.get(k), ref.get(k)) for k in ENCODER_KEYS if meta.get(k) != ref.get(k)}
        if differs:
            what = ", ".join(f"{k} {a!r} (not {b!r})" for k, (a, b) in differs.items())
            raise TLMInputError(
                f"dense.encoder: {d} was embedded differently from the "
                f"{'queries' if queries_meta else 'first shard'}: {what}. Every shard and the queries "
                f"must come from one encoder (`dense.encoder`, `dense.max_length`, `dense.dtype`). "
                f"Fix: delete {d} (or results/dense/) and run again: it is embedded anew."
            )
    return metas


def write_manifest(shard_dirs: list, out) -> dict:
    """The corpus's embeddings as one index: its shards (checked alike), documents and bytes."""
    metas = check_shards(shard_dirs)
    manifest = {
        **{k: metas[0][k] for k in ENCODER_KEYS},
        "shards": [str(d) for d in shard_dirs],
        "documents": sum(m["rows"] for m in metas),
        "bytes": sum((Path(d) / "embeddings.npy").stat().st_size for d in shard_dirs),
        "seconds": sum(m["seconds"] for m in metas),
    }
    write_json(manifest, out)
    return manifest


def search_embeddings(
    queries: np.ndarray,
    docs: np.ndarray,
    k: int,
    first_doc_id: int = 0,
    query_ids: np.ndarray | None = None,
    doc_block: int = DOC_BLOCK,
    query_block: int = QUERY_BLOCK,
) -> pd.DataFrame:
    """Each query's top-k documents by inner product (exact; ties to the lower doc id), as hits
    (query_id, doc_id, score, rank) in (query, rank) order. Scores are raw inner products of the
    stored rows (divide by `score_scale`)."""
    query_ids = np.arange(len(queries)) if query_ids is None else np.asarray(query_ids)
    k = min(k, len(docs))
    parts = []
    for qlo in range(0, len(queries) if k else 0, query_block):
        qf = np.asarray(queries[qlo : qlo + query_block], np.float32)
        best_q = np.zeros(0, np.int64)
        best_d = np.zeros(0, np.int64)
        best_s = np.zeros(0, np.float32)
        for dlo in range(0, len(docs), doc_block):
            scores = qf @ np.asarray(docs[dlo : dlo + doc_block], np.float32).T
            kk = min(k, scores.shape[1])
            kth = np.partition(scores, scores.shape[1] - kk, axis=1)[:, scores.shape[1] - kk]
            q, d = np.nonzero(scores >= kth[:, None])  # every document tied with the k-th too
            best_q = np.concatenate([best_q, q])
            best_d = np.concatenate([best_d, d + dlo])
            best_s = np.concatenate([best_s, scores[q, d]])
            rows, _ = top_rows(best_q, best_d, best_s, k)
            best_q, best_d, best_s = best_q[rows], best_d[rows], best_s[rows]
        rows, rank = top_rows(best_q, best_d, best_s, k)
        parts.append(
            pd.DataFrame(
                {
                    "query_id": query_ids[qlo + best_q[rows]],
                    "doc_id": best_d[rows] + first_doc_id,
                    "score": best_s[rows],
                    "rank": rank,
                }
            )
        )
    if not parts:
        return pd.DataFrame({c: np.zeros(0, t) for c, t in HITS_COLUMNS.items()})
    return pd.concat(parts, ignore_index=True).astype(HITS_COLUMNS)


def search_shard(shard_dir, queries_path, k: int, out) -> int:
    """One shard's top-k of every query (query_id = row of the queries' embeddings), written as a
    hits file sorted by query id (what tlm.retrieval.merge.merge_topk_files reads). Returns hits."""
    docs, meta = load_shard(shard_dir)
    queries, qmeta = load_queries(queries_path)
    check_shards([shard_dir], qmeta)
    hits = search_embeddings(queries, docs, k, meta["first_doc_id"])
    hits["score"] = (hits.score / score_scale(meta["dtype"])).astype(np.float32)
    with atomic_path(out) as tmp:
        pq.write_table(
            arrow_table(hits, HITS_SCHEMA), tmp, row_group_size=CURSOR_ROWS, compression="zstd"
        )
    log.info(
        "%s: %d queries x %d documents, %d hits", shard_dir, len(queries), len(docs), len(hits)
    )
    return len(hits)


def write_queries(out, embeddings: np.ndarray, meta: dict) -> None:
    """A task's query embeddings (`out`.npy) and their meta (`out`.json beside it)."""
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, embeddings)
    write_json(
        {**meta, "rows": int(len(embeddings)), "dim": int(embeddings.shape[1])},
        queries_meta_path(out),
    )


def queries_meta_path(path) -> Path:
    return Path(path).with_suffix(".json")


def load_queries(path) -> tuple[np.ndarray, dict]:
    return np.load(path, mmap_mode="r"), read_json(queries_meta_path(path))


def fuse(
    bm25: pd.DataFrame, dense: pd.DataFrame, k: int, fusion: str, rrf_k: float, embeddings=None
) -> pd.DataFrame:
    """The hybrid top-k of each query from BM25's top-N hits (`bm25`) and the dense top-N hits:
    `rerank`: BM25's candidates ordered by their dense score (`embeddings(q, d)` gives it);
    `rrf`: the union of both lists ordered by sum of 1 / (rrf_k + rank). Ties to the lower doc id."""
    if fusion == "rerank":
        q, d = bm25.query_id.to_numpy(), bm25.doc_id.to_numpy()
        s = embeddings(q, d)
    else:
        both = pd.concat(
            [bm25[["query_id", "doc_id", "rank"]], dense[["query_id", "doc_id", "rank"]]]
        )
        both["rrf"] = 1.0 / (rrf_k + both["rank"].to_numpy(np.float64))
        summed = both.groupby(["query_id", "doc_id"], sort=False)["rrf"].sum().reset_index()
        q, d, s = (summed[c].to_numpy() for c in ("query_id", "doc_id", "rrf"))
    rows, rank = top_rows(q, d, s, k)
    return pd.DataFrame({"query_id": q[rows], "doc_id": d[rows], "score": s[rows], "rank": rank})


def pair_scores(queries_path, shard_dirs: list):
    """A function (q, d) -> the dense score of query q and document d, read from the shards'
    memory-mapped embeddings (the same value as the search gives: exact for int8)."""
    queries, qmeta = load_queries(queries_path)
    metas = check_shards(shard_dirs, qmeta)
    starts = np.array([m["first_doc_id"] for m in metas], np.int64)
    shards = [load_shard(d)[0] for d in shard_dirs]
    scale = score_scale(qmeta["dtype"])

    def scores(q: np.ndarray, d: np.ndarray) -> np.ndarray:
        out = np.zeros(len(q), np.float64)
        which = np.searchsorted(starts, d, side="right") - 1
        for i in np.unique(which):
            at = np.flatnonzero(which == i)
            rows = d[at] - starts[i]
            order = np.argsort(rows, kind="stable")  # memory-mapped rows read in file order
            docs = np.asarray(shards[i][rows[order]], np.float32)
            qs = np.asarray(queries[q[at][order]], np.float32)
            out[at[order]] = np.einsum("ij,ij->i", qs, docs, dtype=np.float64)
        return (out / scale).astype(np.float32)

    return scores


# The `select` function of the hybrid row of the retrievers table (tlm.retrievers).


def select_hybrid(inputs, out, params) -> tuple[int, int]:
    """S of the hybrid retriever: the fused top-K of each query (`fuse`), best rank per document."""
    bm25 = pq.read_table(inputs["bm25"]).to_pandas()
    if len(bm25) and bm25["rank"].max() < params["top_k"] <= len(bm25):
        log.warning(
            "hybrid.candidates = %d is below the task's top_k = %d: each query gets at most %d documents. "
            "Fix: raise `hybrid.candidates`.",
            bm25["rank"].max(),
            params["top_k"],
            bm25["rank"].max(),
        )
    dense = pq.read_table(inputs["dense"]).to_pandas()
    shard_dirs = read_json(inputs["embeddings"])["shards"]
    scores = pair_scores(inputs["queries"], shard_dirs) if params["fusion"] == "rerank" else None
    top = fuse(bm25, dense, params["top_k"], params["fusion"], params["rrf_k"], scores)
    ids, ranks = best_ranks_of(top.doc_id.to_numpy(), top["rank"].to_numpy())
    return write_documents(Path(inputs["corpus"]).parent, ids, ranks, out)
