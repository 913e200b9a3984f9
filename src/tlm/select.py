"""The external data S: the union of every query's top-K (with each document's best rank), or a
random sample of D of the same size for the `random` ablation. Both are fetched shard by shard and
written as they are read: memory holds the wanted ids (12 bytes a hit), never S's texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tlm.corpus import shard_paths
from tlm.io import atomic_path, read_json

EXTERNAL_SCHEMA = pa.schema(
    [("doc_id", pa.int64()), ("text", pa.string()), ("best_rank", pa.int32())]
)


def select_external(topk_path, corpus_dir, out_path) -> tuple[int, int]:
    """S = union of the top-K lists; best_rank = the lowest rank a document got for any query, so S
    can later be cut to a smaller K without retrieving again. Returns (documents, UTF-8 bytes)."""
    return write_documents(corpus_dir, *best_ranks(topk_path), out_path)


def select_random(num_docs: int, corpus_dir, out_path, seed: int) -> tuple[int, int]:
    """`num_docs` documents drawn uniformly from D without replacement (best_rank 0: not retrieved)."""
    total = read_json(f"{corpus_dir}/manifest.json")["documents"]
    ids = np.sort(
        np.random.default_rng(seed).choice(total, size=min(num_docs, total), replace=False)
    )
    return write_documents(corpus_dir, ids, np.zeros(len(ids), np.int32), out_path)


# The `select` functions of the retrievers table (tlm.retrievers): the rule's named inputs and params.


def select_bm25(inputs, out, params) -> tuple[int, int]:
    return select_external(inputs["topk"], Path(inputs["corpus"]).parent, out)


def select_random_like(inputs, out, params) -> tuple[int, int]:
    """As many random documents as the bm25 S holds."""
    return select_random(
        pq.read_metadata(inputs["external"]).num_rows,
        Path(inputs["corpus"]).parent,
        out,
        params["seed"],
    )


def best_ranks(topk_path) -> tuple[np.ndarray, np.ndarray]:
    """The documents of S (sorted ids) and the best rank each got for any query (12 bytes a hit)."""
    table = pq.read_table(topk_path, columns=["doc_id", "rank"])
    return best_ranks_of(table.column(0).to_numpy(), table.column(1).to_numpy())


def best_ranks_of(d: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of hits (doc id, rank), the distinct documents (sorted) and the lowest rank of each."""
    order = np.lexsort((r, d))
    d, r = d[order], r[order]
    first = np.r_[True, d[1:] != d[:-1]] if len(d) else np.zeros(0, bool)
    return d[first], r[first].astype(np.int32)


def write_documents(corpus_dir, doc_ids: np.ndarray, best_rank: np.ndarray, out) -> tuple[int, int]:
    """Write the documents `doc_ids` (sorted) of the corpus with their best rank, shard by shard,
    as they are read; returns (documents, UTF-8 bytes)."""
    docs = nbytes = 0
    with (
        atomic_path(out) as tmp,
        pq.ParquetWriter(tmp, EXTERNAL_SCHEMA, compression="zstd") as writer,
    ):
        for shard in shard_paths(corpus_dir):
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=65_536):
                ids = batch.column(0).to_numpy()
                at = np.minimum(np.searchsorted(doc_ids, ids), max(len(doc_ids) - 1, 0))
                keep = (doc_ids[at] == ids) if len(doc_ids) else np.zeros(len(ids), bool)
                if not keep.any():
                    continue
                text = batch.column(1).filter(pa.array(keep))
                writer.write_table(
                    pa.table([ids[keep], text, best_rank[at[keep]]], schema=EXTERNAL_SCHEMA)
                )
                docs += int(keep.sum())
                nbytes += int(pc.sum(pc.binary_length(text)).as_py() or 0)
    return docs, nbytes


def external_size(paths, max_rank: int = 0) -> tuple[int, int]:
    """|S| of the external data files (only best_rank <= max_rank, if given): documents and UTF-8 bytes."""
    docs = nbytes = 0
    for path in paths:
        text = pq.read_table(
            path, columns=["text"], filters=[("best_rank", "<=", max_rank)] if max_rank else None
        ).column("text")
        docs += len(text)
        nbytes += pc.sum(pc.binary_length(text)).as_py() or 0
    return docs, nbytes
