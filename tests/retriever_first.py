"""A retriever added as one module plus one row (tests/test_retrievers.py): S = the corpus's first
documents, a stand-in for a new way of choosing S (dense, hybrid)."""

import numpy as np

from tlm.retrievers import CORPUS, RETRIEVERS, Retriever, register
from tlm.select import write_documents


def select(inputs, out, params) -> tuple[int, int]:
    """The first `n` documents of the corpus, unranked (best_rank 0)."""
    n = params["n"]
    return write_documents(inputs["corpus"], np.arange(n), np.zeros(n, np.int32), out)


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
