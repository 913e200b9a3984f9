"""A retriever added as one module plus one row (tests/test_retrievers.py): S = the corpus's first
documents, a stand-in for a new way of choosing S (dense, hybrid)."""

from pathlib import Path

import numpy as np

from tlm.retrievers import CORPUS, RETRIEVERS, Retriever, register
from tlm.select import write_documents


def select(inputs, out, params) -> tuple[int, int]:
    """The first `n` documents of the corpus, unranked (best_rank 0)."""
    n = params["n"]
    corpus_dir = Path(inputs["corpus"]).parent  # CORPUS is the manifest, the shards beside it
    return write_documents(corpus_dir, np.arange(n), np.zeros(n, np.int32), out)


if "first" not in RETRIEVERS:
    register(
        Retriever(
            "first",
            "the corpus's first documents",
            select,
            {"corpus": CORPUS},
            params=lambda config: {"n": 40},
        )
    )
