"""The external data S: the union of every query's top-K (with each document's best rank), or a
random sample of D of the same size for the `random` ablation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tlm.corpus import read_docs, shard_paths
from tlm.io import read_json, write_parquet

EXTERNAL_SCHEMA = pa.schema([("doc_id", pa.int64()), ("text", pa.string()), ("best_rank", pa.int32())])


def _fetch(corpus_dir, best_rank: pd.Series) -> pd.DataFrame:
    """Texts of the documents indexed by `best_rank` (doc_id -> rank), streamed shard by shard."""
    wanted = pa.array(best_rank.index.to_numpy(np.int64))
    parts = [batch.to_pandas() for shard in shard_paths(corpus_dir) for batch in read_docs(shard, wanted)]
    docs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"doc_id": [], "text": []})
    docs["best_rank"] = best_rank.reindex(docs["doc_id"]).to_numpy(np.int32)
    return docs.sort_values("doc_id", ignore_index=True)


def select_external(topk: pd.DataFrame, corpus_dir, out_path) -> pd.DataFrame:
    """S = union of the top-K lists; best_rank = the lowest rank a document got for any query, so S
    can later be cut to a smaller K without retrieving again."""
    best = topk.groupby("doc_id")["rank"].min()
    docs = _fetch(corpus_dir, best)
    write_parquet(docs, out_path, EXTERNAL_SCHEMA)
    return docs


def select_random(num_docs: int, corpus_dir, out_path, seed: int) -> pd.DataFrame:
    """`num_docs` documents drawn uniformly from D without replacement (best_rank 0: not retrieved)."""
    total = read_json(f"{corpus_dir}/manifest.json")["documents"]
    ids = np.random.default_rng(seed).choice(total, size=min(num_docs, total), replace=False)
    docs = _fetch(corpus_dir, pd.Series(0, index=np.sort(ids)))
    write_parquet(docs, out_path, EXTERNAL_SCHEMA)
    return docs


def external_size(paths, max_rank: int = 0) -> tuple[int, int]:
    """|S| of the external data files (only best_rank <= max_rank, if given): documents and UTF-8 bytes."""
    docs = nbytes = 0
    for path in paths:
        text = pq.read_table(path, columns=["text"], filters=[("best_rank", "<=", max_rank)] if max_rank else None).column("text")
        docs += len(text)
        nbytes += pc.sum(pc.binary_length(text)).as_py() or 0
    return docs, nbytes
