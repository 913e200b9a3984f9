"""A shard's BM25 index with corpus-wide statistics, in three steps (each a Snakemake job):
`count_terms` per shard, `merge_stats` once, `build_shard_index` per shard (package docstring)."""

from __future__ import annotations

import itertools
import multiprocessing
from contextlib import nullcontext
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tlm.io import atomic_path, read_json, write_json
from tlm.retrieval.analyzer import Analyzer
from tlm.retrieval.kernel import BLOCK, BLOCK_BITS, KERNEL_FORMAT, posting_scores

TERMS_ROW_GROUP = 65_536
DF_SCHEMA = pa.schema([("term", pa.string()), ("df", pa.int64())])
TERMS_SCHEMA = pa.schema([("term", pa.string()), ("df", pa.int64()), ("id", pa.int32())])


class _TermIds(dict):
    """Word -> local term id (-1 for a stopword), worked out once per distinct word.

    Stopword lookup and stemming then cost per vocabulary word instead of per token.
    """

    def __init__(self, analyzer: Analyzer):
        super().__init__()
        self.analyzer = analyzer
        self.vocab: dict[str, int] = {}

    def __missing__(self, word: str) -> int:
        terms = self.analyzer(word)
        self[word] = term = self.vocab.setdefault(terms[0], len(self.vocab)) if terms else -1
        return term


def count_terms(
    shard: str | Path,
    analyzer: Analyzer,
    out_dir: str | Path,
    batch_size: int = 65_536,
    processes: int = 1,
) -> dict:
    """Tokenize one corpus shard: postings (doc, term, tf) with a local vocabulary, and local df.

    Batches of documents are tokenized in `processes` worker processes (Python's tokenizing holds
    the GIL), a few at a time so memory stays bounded; term ids are given in order of first
    appearance whatever the number of processes, so the output is the same.
    """
    vocab: dict[str, int] = {}
    doc_ids, doc_len, term, tf = ([np.zeros(0, np.int64)] for _ in range(4))
    ptr = [np.zeros(1, np.int64)]
    batches = pq.ParquetFile(shard).iter_batches(batch_size=batch_size, columns=["doc_id", "text"])
    _init_worker(analyzer)  # this process's batches (processes=1), or what forked workers inherit
    pool = multiprocessing.get_context("fork").Pool(processes) if processes > 1 else nullcontext()
    with pool:
        while wave := list(itertools.islice(batches, 2 * processes)):
            texts = [batch.column(1).to_pylist() for batch in wave]
            for batch, (words, lengths, ends, local_term, counts) in zip(
                wave, (pool.map if processes > 1 else map)(_count_batch, texts)
            ):
                remap = np.fromiter(
                    (vocab.setdefault(w, len(vocab)) for w in words), np.int64, len(words)
                )
                doc_ids.append(batch.column(0).to_numpy())
                doc_len.append(lengths)
                ptr.append(ptr[-1][-1] + ends)
                term.append(remap[local_term])
                tf.append(counts)
    doc_ids, doc_len, ptr, term, tf = (np.concatenate(x) for x in (doc_ids, doc_len, ptr, term, tf))
    df = np.bincount(term, minlength=len(vocab))
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        np.savez(
            tmp / "postings.npz",
            doc_ids=doc_ids.astype(np.int64),
            doc_len=doc_len.astype(np.int32),
            ptr=ptr.astype(np.int64),
            term=term.astype(np.int32),
            tf=tf.astype(np.int32),
        )
        # sorted by term, in row groups: corpus_stats merges the shards' vocabularies range by range
        terms = pa.table(
            [list(vocab), df.astype(np.int64), np.arange(len(vocab), dtype=np.int32)],
            schema=TERMS_SCHEMA,
        )
        pq.write_table(
            terms.sort_by("term"),
            tmp / "terms.parquet",
            row_group_size=TERMS_ROW_GROUP,
            compression="zstd",
        )
        meta = {"num_docs": len(doc_ids), "total_len": int(doc_len.sum())}
        write_json(meta, tmp / "counts.json")
    return meta


_analyzer: Analyzer | None = (
    None  # the analyzer of count_terms' worker processes (and of the parent)
)


def _init_worker(analyzer: Analyzer) -> None:
    global _analyzer
    _analyzer = analyzer


def _count_batch(texts: list[str]):
    """One batch's postings with a batch-local vocabulary: (terms in order of first appearance,
    document lengths, each document's end in the postings, local term ids, term frequencies)."""
    term_ids = _TermIds(_analyzer)
    ids, n_words = [], []
    for text in texts:
        words = _analyzer.words(text)
        n_words.append(len(words))
        ids.extend(map(term_ids.__getitem__, words))
    ids = np.asarray(ids, np.int64)
    doc = np.repeat(np.arange(len(n_words), dtype=np.int64), n_words)[ids >= 0]
    # one sort of (doc, term) keys gives every document's distinct terms and their frequencies
    keys, counts = np.unique((doc << 32) | ids[ids >= 0], return_counts=True)
    ends = np.searchsorted(keys >> 32, np.arange(1, len(n_words) + 1))
    return (
        list(term_ids.vocab),
        np.bincount(doc, minlength=len(n_words)),
        ends,
        keys & 0xFFFFFFFF,
        counts,
    )


def merge_stats(
    count_dirs: list[str | Path], out_dir: str | Path, range_rows: int = 4_000_000
) -> dict:
    """Corpus-wide statistics from every shard's counts: df per term, document count, average length.

    The shards' vocabularies (sorted by term) are merged range by range of terms, each range read
    from every shard (its row groups found by their statistics): memory holds one range of about
    `range_rows` rows, never every shard's vocabulary at once. The ranges' bounds are quantiles of
    the row groups' first terms, read from the files' metadata alone.
    """
    num_docs = total_len = rows = 0
    starts = []
    for d in count_dirs:
        meta = read_json(Path(d) / "counts.json")
        num_docs += meta["num_docs"]
        total_len += meta["total_len"]
        md = pq.read_metadata(Path(d) / "terms.parquet")
        rows += md.num_rows
        starts += [
            md.row_group(g).column(0).statistics.min
            for g in range(md.num_row_groups)
            if md.row_group(g).num_rows
        ]
    starts = sorted(starts)
    parts = max(1, -(-rows // range_rows))
    bounds = [None, *sorted({starts[len(starts) * i // parts] for i in range(1, parts)}), None]
    num_terms = 0
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        with pq.ParquetWriter(tmp / "df.parquet", DF_SCHEMA, compression="zstd") as writer:
            for lo, hi in zip(bounds, bounds[1:]):
                where = [
                    f
                    for f in (("term", ">=", lo) if lo else None, ("term", "<", hi) if hi else None)
                    if f
                ]
                tables = [
                    pq.read_table(
                        Path(d) / "terms.parquet", columns=["term", "df"], filters=where or None
                    )
                    for d in count_dirs
                ]
                merged = (
                    pa.concat_tables(tables)
                    .group_by("term")
                    .aggregate([("df", "sum")])
                    .rename_columns(["term", "df"])
                )
                writer.write_table(merged.sort_by("term").cast(DF_SCHEMA))
                num_terms += merged.num_rows
        stats = {
            "num_docs": num_docs,
            "total_len": total_len,
            "avg_doc_len": total_len / max(num_docs, 1),
            "num_terms": num_terms,
        }
        write_json(stats, tmp / "stats.json")
    return stats


def idf(df: np.ndarray, num_docs: int) -> np.ndarray:
    """Lucene's BM25 idf (bm25s method='lucene'): ln(1 + (N - df + 0.5) / (df + 0.5))."""
    return np.log1p((num_docs - df + 0.5) / (df + 0.5))


def build_shard_index(
    counts_dir: str | Path,
    stats_dir: str | Path,
    out_dir: str | Path,
    k1: float = 1.5,
    b: float = 0.75,
) -> None:
    """Score one shard's postings with global statistics and save the kernel's layout
    (`save_kernel_layout`), its vocabulary (vocab.json) and corpus doc ids (doc_ids.npy).

    Local term ids go by descending local df (ties in order of first appearance), so that the
    common terms have small ids and a document's ascending term ids differ by little."""
    counts_dir, stats_dir = Path(counts_dir), Path(stats_dir)
    post = np.load(counts_dir / "postings.npz")
    local = pq.read_table(counts_dir / "terms.parquet", columns=["term", "id"])
    stats = read_json(stats_dir / "stats.json")
    # the global df of this shard's terms only (the scan keeps the matching rows of the corpus's vocabulary)
    found = pq.read_table(
        stats_dir / "df.parquet",
        filters=pc.field("term").isin(local.column("term").combine_chunks()),
    )
    joined = local.join(found, "term").sort_by("id")
    local_df = np.bincount(post["term"], minlength=joined.num_rows)
    by_df = np.argsort(-local_df, kind="stable")  # new id -> count_terms' id
    renumber = np.empty_like(by_df)
    renumber[by_df] = np.arange(len(by_df))
    terms = np.asarray(joined.column("term").to_pylist(), dtype=object)[by_df].tolist()
    term_idf = idf(joined.column("df").to_numpy().astype(np.float64)[by_df], stats["num_docs"])

    doc_len = post["doc_len"]
    doc_of_posting = np.repeat(np.arange(len(doc_len), dtype=np.int64), np.diff(post["ptr"]))
    term, tf = renumber[post["term"]], post["tf"]
    sort_within_documents(post["ptr"], term, tf)  # the forward index's order
    scores = posting_scores(
        term_idf[term], tf, doc_len[doc_of_posting], k1, b, stats["avg_doc_len"]
    )
    # by term, documents ascending within a term (a stable sort of the document-ordered postings)
    by_term = np.argsort(term, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(term, minlength=len(terms)))])
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        write_json(terms, tmp / "vocab.json")
        np.save(tmp / "doc_ids.npy", post["doc_ids"])
        save_kernel_layout(tmp, scores[by_term], doc_of_posting[by_term], indptr.astype(np.int64))
        save_forward_index(tmp, post["ptr"], term, tf, doc_len, term_idf)
        write_json({**stats, "k1": k1, "b": b, "kernel": KERNEL_FORMAT}, tmp / "global_stats.json")


@numba.njit(cache=True)
def sort_within_documents(ptr: np.ndarray, term: np.ndarray, tf: np.ndarray) -> None:
    """Each document's postings (ptr[d] to ptr[d + 1]) by ascending term, in place: a sort per
    document: 3.8 s for 10^6 documents where one lexsort of all postings took 24.6 s (same load)."""
    for d in range(len(ptr) - 1):
        order = np.argsort(term[ptr[d] : ptr[d + 1]])
        term[ptr[d] : ptr[d + 1]] = term[ptr[d] : ptr[d + 1]][order]
        tf[ptr[d] : ptr[d + 1]] = tf[ptr[d] : ptr[d + 1]][order]


def _narrow(values: np.ndarray, dtypes=(np.uint16, np.uint32, np.int64)) -> np.ndarray:
    """`values` (non-negative integers) in the first of `dtypes` that holds them all."""
    top = int(values.max()) if len(values) else 0
    return values.astype(next(d for d in dtypes if top <= np.iinfo(d).max))


def save_kernel_layout(
    out_dir: Path, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray
) -> None:
    """The postings by term as the search kernel's block loop reads them, 4 bytes each
    (tlm.retrieval.kernel): `data` their float32 scores, `indices` their documents (ascending
    within a term), `indptr` each term's first posting (one more entry ends the last term's).

    postings.npy: per posting one uint32, its doc id within its block of BLOCK documents in the high
    16 bits and its 16-bit impact (`quantize_impacts`) in the low 16 bits, so offsets ascend with
    the words. A run is a term's postings within one block: run_start.npy
    (its first posting; one more entry ends the last run), run_block.npy (its block) and
    term_runs.npy (each term's first run, one more entry ends the last term's). term_max.npy: each
    term's largest impact. Offsets are in the narrowest unsigned type that holds them.
    """
    block = indices >> BLOCK_BITS
    new_run = np.ones(len(indices), bool)
    new_run[1:] = block[1:] != block[:-1]
    new_run[indptr[:-1][indptr[:-1] < len(indices)]] = True  # every term starts a run
    starts = np.flatnonzero(new_run)
    impacts = quantize_impacts(data)
    term_max = np.zeros(len(indptr) - 1, np.uint16)
    has = indptr[1:] > indptr[:-1]
    if has.any():
        term_max[has] = np.maximum.reduceat(impacts, indptr[:-1][has])
    np.save(out_dir / "term_max.npy", term_max)
    postings = np.empty(
        len(indices), np.uint32
    )  # built in place: one posting-sized array at a time
    np.bitwise_and(indices, BLOCK - 1, out=postings, casting="unsafe")
    postings <<= 16
    postings |= impacts
    np.save(out_dir / "postings.npy", postings)
    wide = (np.uint32, np.int64)
    np.save(out_dir / "run_start.npy", _narrow(np.append(starts, len(indices)), wide))
    np.save(out_dir / "run_block.npy", _narrow(block[starts]))
    np.save(out_dir / "term_runs.npy", _narrow(np.searchsorted(starts, indptr), wide))


def save_forward_index(
    out_dir: Path,
    ptr: np.ndarray,
    term: np.ndarray,
    tf: np.ndarray,
    doc_len: np.ndarray,
    term_idf: np.ndarray,
) -> None:
    """Each document's terms and term frequencies, as the kernel rescores its candidates: one
    contiguous read per document, documents' postings from doc_ptr.npy[d] to doc_ptr.npy[d + 1].

    doc_terms.npy: each document's term ids ascending, as uint16 differences from the previous one
    (the first from 0); a difference of 65535 or more is written 65535 and the term id itself goes
    to term_escape_id.npy, its posting to term_escape_at.npy (ascending). doc_tf.npy: the term
    frequencies as uint8; 0 stands for one of 256 or more, found as the term's
    (tf_escape_at.npy, tf_escape.npy). doc_len.npy (each document's length, for its BM25 length
    norm) and term_idf.npy (each term's float64 idf) make the kernel's float32 scores the build's
    (`posting_scores`), bit for bit.
    """
    starts = ptr[:-1][ptr[:-1] < ptr[1:]]
    step = term.astype(np.int64)
    step[1:] -= term[:-1]
    step[starts] = term[starts]
    far = np.flatnonzero(step >= 0xFFFF)
    np.save(out_dir / "doc_ptr.npy", _narrow(ptr, (np.uint32, np.int64)))
    np.save(out_dir / "doc_terms.npy", np.minimum(step, 0xFFFF).astype(np.uint16))
    np.save(out_dir / "term_escape_at.npy", far.astype(np.int64))
    np.save(out_dir / "term_escape_id.npy", term[far].astype(np.int64))
    big = np.flatnonzero(tf > 0xFF)
    np.save(out_dir / "doc_tf.npy", np.where(tf > 0xFF, 0, tf).astype(np.uint8))
    np.save(out_dir / "tf_escape_at.npy", big.astype(np.int64))
    np.save(out_dir / "tf_escape.npy", tf[big].astype(np.int64))
    np.save(out_dir / "doc_len.npy", _narrow(doc_len, (np.uint16, np.uint32)))
    np.save(out_dir / "term_idf.npy", term_idf.astype(np.float64))


def quantize_impacts(scores: np.ndarray) -> np.ndarray:
    """Positive scores as 16-bit integers rounded up, floor(score * S) + 1 with S = 65534 / max(scores):
    each exceeds S * score by at most 1 (tlm.retrieval.kernel)."""
    if not len(scores):
        return np.zeros(0, np.uint16)
    return (np.floor(scores.astype(np.float64) * (65534.0 / float(scores.max()))) + 1).astype(
        np.uint16
    )
