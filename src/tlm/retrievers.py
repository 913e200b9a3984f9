"""The table of retrievers: how a tlm run's external data S is chosen (`runs.*.external` names a row).

The rules and the library read this table alone: the config's allowed values (tlm.config), the
rule that writes each S (`select_{source}`, rules/retrieve.smk), the file it writes, which runs
read which tokenized S, and whether a run's own `top_k` can cut S. A new retriever is a module
with its `select` function plus one row here (README, "Layout").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tlm import select
from tlm.retrieval import dense


@dataclass(frozen=True)
class Retriever:
    """One way of choosing S.

    `select(inputs, out, params) -> (documents, bytes)` writes S (doc_id, text, best_rank: see
    tlm.select.EXTERNAL_SCHEMA) to `out` from the rule's named `inputs` (paths with {task}) and
    `params` (`params(config)`, the settings S depends on). S is written to
    results/retrieval/{task}/{source}.parquet by rule select_{source}. `ranked`: S holds each
    document's best rank, so a run with a smaller `top_k` takes the documents ranked at most that
    (tokenized as source external-k{K}) without retrieving again. No `select`: the run has no S.
    `card(facts) -> str`: the model card's line on S from `facts` (k, query_mode, corpus_documents,
    corpus_paths, documents, megabytes); default: the description with S's size.
    """

    name: str
    description: str
    select: Callable | None = None
    inputs: dict = field(default_factory=dict)
    params: Callable[[dict], dict] = lambda config: {}
    source: str | None = None  # default: the name
    ranked: bool = False
    card: Callable[[dict], str] | None = None

    def __post_init__(self):
        if self.select is not None and self.source is None:
            object.__setattr__(self, "source", self.name)

    def card_line(self, facts: dict) -> str:
        if self.card is not None:
            return self.card(facts)
        return f"external data S ({self.description}): {facts['documents']} documents, {facts['megabytes']:.1f} MB"

    @property
    def rule(self) -> str | None:
        return f"select_{self.source}" if self.select is not None else None


CORPUS = "results/corpus/manifest.json"  # with its shards (rules/retrieve.smk)
RETRIEVERS: dict[str, Retriever] = {}


def register(retriever: Retriever) -> Retriever:
    """Add a row (its name must be new)."""
    if retriever.name in RETRIEVERS:
        raise ValueError(f"a retriever named {retriever.name!r} exists already")
    RETRIEVERS[retriever.name] = retriever
    return retriever


register(
    Retriever(
        "bm25",
        "the union of every training example's top-K BM25 neighbours in the corpus (TLM)",
        select.select_bm25,
        {"topk": "results/retrieval/{task}/topk.parquet", "corpus": CORPUS},
        source="external",
        ranked=True,
        card=lambda f: (
            f"external data S: the top-{f['k']} BM25 neighbours of each training example (queries: "
            f"{f['query_mode']}) in a general corpus of {f['corpus_documents']} documents ({f['corpus_paths']}): "
            f"{f['documents']} documents, {f['megabytes']:.1f} MB"
        ),
    )
)
register(
    Retriever(
        "random",
        "as many documents as the bm25 S, drawn at random from the corpus (the ablation)",
        select.select_random_like,
        {"external": "results/retrieval/{task}/external.parquet", "corpus": CORPUS},
        params=lambda config: {"seed": config["seed"]},
        card=lambda f: (
            f"external data: {f['documents']} documents drawn at random from a corpus of {f['corpus_documents']} "
            "(the `random` ablation)"
        ),
    )
)
register(
    Retriever(
        "dense",
        "the union of every training example's top-K neighbours by sentence-embedding similarity",
        select.select_bm25,  # the same union of top-K lists, from the dense ones
        {"topk": "results/retrieval/{task}/dense/dense-topk.parquet", "corpus": CORPUS},
        ranked=True,
        card=lambda f: (
            f"external data S: the top-{f['k']} neighbours of each training example by the inner product "
            f"of L2-normalised sentence embeddings (`dense.encoder`) in a general corpus of "
            f"{f['corpus_documents']} documents ({f['corpus_paths']}): {f['documents']} documents, "
            f"{f['megabytes']:.1f} MB"
        ),
    )
)
register(
    Retriever(
        "hybrid",
        "the union of every training example's top-K by BM25 and sentence embeddings together",
        dense.select_hybrid,
        {
            "bm25": "results/retrieval/{task}/hybrid/bm25-topk.parquet",
            "dense": "results/retrieval/{task}/hybrid/dense-topk.parquet",
            "queries": "results/retrieval/{task}/dense/queries.npy",
            "embeddings": "results/dense/manifest.json",
            "corpus": CORPUS,
        },
        params=lambda config: {
            "top_k": lambda wc: config["tasks"][wc.task]["top_k"],
            "fusion": config["hybrid"]["fusion"],
            "rrf_k": config["hybrid"]["rrf_k"] if config["hybrid"]["fusion"] == "rrf" else None,
        },
        ranked=True,
        card=lambda f: (
            f"external data S: the top-{f['k']} of each training example by BM25 and sentence embeddings "
            f"together (`hybrid.fusion`: BM25's candidates re-ranked by the embeddings, or both lists "
            f"fused by reciprocal rank) in a general corpus of {f['corpus_documents']} documents "
            f"({f['corpus_paths']}): {f['documents']} documents, {f['megabytes']:.1f} MB"
        ),
    )
)
register(Retriever("none", "no external data: the task's texts only"))


def by_rule(rule: str) -> Retriever:
    """The retriever whose rule is `rule` (the select script's way to its row)."""
    return next(r for r in RETRIEVERS.values() if r.rule == rule)
