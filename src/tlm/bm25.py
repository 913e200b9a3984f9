"""Sharded BM25 that is exact: every shard is scored with corpus-wide statistics.

bm25s computes IDF and average document length from the documents of one index, so two shards'
scores are not comparable. Here indexing is three steps (each a Snakemake job):

1. `count_terms` (per shard): tokenize once, keep the postings (term, tf) and each term's local df;
2. `merge_stats` (once): global df, document count and average length from all shards' counts;
3. `build_shard_index` (per shard): BM25 (Lucene variant, as bm25s) with the GLOBAL statistics,
   saved in bm25s's own format so `bm25s.BM25.load(dir, mmap=True)` reads it, plus the search
   kernel's layout of the same postings (`save_kernel_layout`).

A shard's top-K therefore holds the same scores one unsharded index would give, and `merge_topk`
of the shards' top-K (ties broken by the lower doc id) is exactly the unsharded top-K.
`ShardIndex.search` finds a shard's top-K with a cache-blocked numba kernel (see "the search
kernel" below), over many threads, returning exactly what scoring every document would.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bm25s.stopwords import STOPWORDS_EN
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from tlm.io import TLMInputError, atomic_path, read_json, write_json

log = logging.getLogger(__name__)

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default pattern
# Scripts written without spaces between words: Han (Chinese, Japanese kanji), kana, Thai, Lao,
# Khmer, Myanmar. TOKEN_PATTERN would make one term of a whole sentence of them, which no query
# matches; their runs are indexed as overlapping character pairs instead (as Lucene's CJKAnalyzer).
UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
UNSPACED_CHAR = re.compile(f"[{UNSPACED}]")
UNSPACED_PATTERN = re.compile(f"[{UNSPACED}]+|[^\\W{UNSPACED}]{{2,}}")
TERMS_ROW_GROUP = 65_536
DF_SCHEMA = pa.schema([("term", pa.string()), ("df", pa.int64())])
TERMS_SCHEMA = pa.schema([("term", pa.string()), ("df", pa.int64()), ("id", pa.int32())])
HITS_COLUMNS = {"query_id": "int64", "doc_id": "int64", "score": "float32", "rank": "int32"}


@dataclass(frozen=True)
class Analyzer:
    """Text -> index terms. The same settings must be used for documents and queries."""

    lowercase: bool = True
    stopwords: str | None = "en"
    stemmer: str | None = None  # a PyStemmer language such as "english", or None
    analyzer: str = "auto"  # auto: runs of unspaced scripts as character pairs; word: TOKEN_PATTERN alone

    def __post_init__(self):
        stop = frozenset(STOPWORDS_EN) if self.stopwords == "en" else frozenset()
        object.__setattr__(self, "_stop", stop)
        stem = None
        if self.stemmer:
            import Stemmer  # PyStemmer: only needed when stemming is switched on

            stem = Stemmer.Stemmer(self.stemmer).stemWords
        object.__setattr__(self, "_stem", stem)

    def __call__(self, text: str) -> list[str]:
        terms = [t for t in self.words(text) if t not in self._stop]
        return self._stem(terms) if self._stem else terms

    def words(self, text: str) -> list[str]:
        """The words of `text` before stopwords and stemming (each maps to at most one term); a
        run of an unspaced script gives its overlapping character pairs (one character alone)."""
        text = text.lower() if self.lowercase else text
        if self.analyzer == "word" or not UNSPACED_CHAR.search(text):  # ordinary text: one regex pass
            return TOKEN_PATTERN.findall(text)
        words = []
        for w in UNSPACED_PATTERN.findall(text):
            if UNSPACED_CHAR.match(w):
                words.extend([w[i : i + 2] for i in range(len(w) - 1)] if len(w) > 1 else [w])
            else:
                words.append(w)
        return words


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


def count_terms(shard: str | Path, analyzer: Analyzer, out_dir: str | Path, batch_size: int = 65_536, processes: int = 1) -> dict:
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
                remap = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.int64, len(words))
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
        terms = pa.table([list(vocab), df.astype(np.int64), np.arange(len(vocab), dtype=np.int32)], schema=TERMS_SCHEMA)
        pq.write_table(terms.sort_by("term"), tmp / "terms.parquet", row_group_size=TERMS_ROW_GROUP, compression="zstd")
        meta = {"num_docs": len(doc_ids), "total_len": int(doc_len.sum())}
        write_json(meta, tmp / "counts.json")
    return meta


_analyzer: Analyzer | None = None  # the analyzer of count_terms' worker processes (and of the parent)


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
    return list(term_ids.vocab), np.bincount(doc, minlength=len(n_words)), ends, keys & 0xFFFFFFFF, counts


def merge_stats(count_dirs: list[str | Path], out_dir: str | Path, range_rows: int = 4_000_000) -> dict:
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
        starts += [md.row_group(g).column(0).statistics.min for g in range(md.num_row_groups) if md.row_group(g).num_rows]
    starts = sorted(starts)
    parts = max(1, -(-rows // range_rows))
    bounds = [None, *sorted({starts[len(starts) * i // parts] for i in range(1, parts)}), None]
    num_terms = 0
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        with pq.ParquetWriter(tmp / "df.parquet", DF_SCHEMA, compression="zstd") as writer:
            for lo, hi in zip(bounds, bounds[1:]):
                where = [f for f in (("term", ">=", lo) if lo else None, ("term", "<", hi) if hi else None) if f]
                tables = [
                    pq.read_table(Path(d) / "terms.parquet", columns=["term", "df"], filters=where or None) for d in count_dirs
                ]
                merged = pa.concat_tables(tables).group_by("term").aggregate([("df", "sum")]).rename_columns(["term", "df"])
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
    counts_dir: str | Path, stats_dir: str | Path, out_dir: str | Path, k1: float = 1.5, b: float = 0.75
) -> None:
    """Score one shard's postings with global statistics; save it as a bm25s index plus the kernel's layout."""
    counts_dir, stats_dir = Path(counts_dir), Path(stats_dir)
    post = np.load(counts_dir / "postings.npz")
    local = pq.read_table(counts_dir / "terms.parquet", columns=["term", "id"])
    stats = read_json(stats_dir / "stats.json")
    # the global df of this shard's terms only (the scan keeps the matching rows of the corpus's vocabulary)
    found = pq.read_table(stats_dir / "df.parquet", filters=pc.field("term").isin(local.column("term").combine_chunks()))
    joined = local.join(found, "term").sort_by("id")
    local_terms = joined.column("term").to_pylist()
    df = joined.column("df").to_numpy().astype(np.float64)
    term_idf = idf(df, stats["num_docs"])

    doc_len = post["doc_len"].astype(np.float64)
    doc_of_posting = np.repeat(np.arange(len(doc_len)), np.diff(post["ptr"]))
    tf = post["tf"].astype(np.float64)
    norm = k1 * (1 - b + b * doc_len[doc_of_posting] / stats["avg_doc_len"])
    scores = (term_idf[post["term"]] * tf / (tf + norm)).astype(np.float32)

    # CSC (column = term): bm25s's layout; a stable sort keeps documents ascending within a term.
    order = np.argsort(post["term"], kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(post["term"], minlength=len(local_terms)))]).astype(np.int64)
    data, indices = scores[order], doc_of_posting[order].astype(np.int32)
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    retriever.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": len(doc_len)}
    retriever.vocab_dict = {t: i for i, t in enumerate(local_terms)}
    retriever.nonoccurrence_array = None  # Lucene BM25 needs none
    with atomic_path(out_dir, is_dir=True) as tmp:
        retriever.save(tmp, show_progress=False)
        np.save(tmp / "doc_ids.npy", post["doc_ids"])
        save_kernel_layout(tmp, data, indices, indptr)
        # each document's terms and float32 scores, as the kernel rescores its candidates
        np.save(tmp / "doc_ptr.npy", post["ptr"])
        np.save(tmp / "doc_terms.npy", post["term"])
        np.save(tmp / "doc_scores.npy", scores)
        write_json({**stats, "k1": k1, "b": b, "kernel": KERNEL_FORMAT}, tmp / "global_stats.json")


def save_kernel_layout(out_dir: Path, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> None:
    """The postings as the search kernel reads them, 4 bytes each (see "the search kernel").

    postings.npy: per posting one uint32, its doc id within its block of BLOCK documents in the high
    16 bits and its 16-bit impact (`quantize_impacts`) in the low 16 bits, so offsets ascend with
    the words. A run is a term's postings within one block: run_start.npy
    (its first posting; one more entry ends the last run), run_block.npy (its block) and
    term_runs.npy (each term's first run, one more entry ends the last term's). term_max.npy: each
    term's largest impact. (The documents' own terms and scores, doc_ptr.npy, doc_terms.npy and
    doc_scores.npy, come from `build_shard_index`.)
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
    postings = np.empty(len(indices), np.uint32)  # built in place: one posting-sized array at a time
    np.bitwise_and(indices, BLOCK - 1, out=postings, casting="unsafe")
    postings <<= 16
    postings |= impacts
    np.save(out_dir / "postings.npy", postings)
    np.save(out_dir / "run_start.npy", np.append(starts, len(indices)).astype(np.int64))
    np.save(out_dir / "run_block.npy", block[starts].astype(np.int32))
    np.save(out_dir / "term_runs.npy", np.searchsorted(starts, indptr).astype(np.int64))


def quantize_impacts(scores: np.ndarray) -> np.ndarray:
    """Positive scores as 16-bit integers rounded up, floor(score * S) + 1 with S = 65534 / max(scores):
    each exceeds S * score by at most 1 (see "the search kernel")."""
    if not len(scores):
        return np.zeros(0, np.uint16)
    return (np.floor(scores.astype(np.float64) * (65534.0 / float(scores.max()))) + 1).astype(np.uint16)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest positive scores, ordered by score desc then index asc (exact ties)."""
    cand = np.flatnonzero(scores > 0)
    if len(cand) > k:
        kth = np.partition(scores[cand], len(cand) - k)[len(cand) - k]
        cand = cand[scores[cand] >= kth]  # keeps every doc tied with the k-th
    order = np.lexsort((cand, -scores[cand]))
    return cand[order[:k]]


class ShardIndex:
    """One shard's index, memory-mapped: the OS pages in only the postings that queries touch."""

    def __init__(self, index_dir: str | Path):
        index_dir = Path(index_dir)
        meta = read_json(index_dir / "global_stats.json") if (index_dir / "global_stats.json").exists() else {}
        if meta.get("kernel") != KERNEL_FORMAT:
            raise TLMInputError(
                f"{index_dir}: not a tlm index of this version (its search-kernel files are missing or of another format). "
                "Fix: rebuild it with tlm (rule build_index)."
            )
        self.layout = tuple(np.load(index_dir / f"{name}.npy", mmap_mode="r") for name in KERNEL_LAYOUT)
        self.retriever = bm25s.BM25.load(index_dir, mmap=True, load_corpus=False)
        self.vocab = self.retriever.vocab_dict
        self.scores = self.retriever.scores
        self.doc_ids = np.load(index_dir / "doc_ids.npy", mmap_mode="r")

    @property
    def num_docs(self) -> int:
        return int(self.scores["num_docs"])

    def term_ids(self, queries: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Queries as one flat array of term ids plus offsets; unknown terms dropped, repeats kept (as bm25s)."""
        ids = [[self.vocab[t] for t in q if t in self.vocab] for q in queries]
        ptr = np.zeros(len(ids) + 1, np.int64)
        np.cumsum([len(q) for q in ids], out=ptr[1:])
        return np.fromiter((t for q in ids for t in q), np.int32, int(ptr[-1])), ptr

    def search(self, queries: list[list[str]], k: int, query_ids=None, threads: int = 1, batch_size: int = 4096) -> pd.DataFrame:
        """Top-k hits of each tokenized query (exact; see "the search kernel").

        Queries are scored in batches of `batch_size` over `threads` threads; the result equals
        `search_exhaustive` (same float32 scores, ties to the lower doc id).
        """
        query_ids = np.arange(len(queries)) if query_ids is None else np.asarray(query_ids)
        k = max(0, min(k, self.num_docs))
        threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
        out_q, out_d, out_s, out_r = [], [], [], []
        start = time.perf_counter()
        for lo in range(0, len(queries), batch_size):
            terms, ptr = self.term_ids(queries[lo : lo + batch_size])
            docs, scores, counts = _search_batch(terms, ptr, *self.layout, self.num_docs, k, threads)
            rank = np.arange(1, k + 1, dtype=np.int32)
            hit = rank[None, :] <= counts[:, None]
            out_q.append(np.repeat(query_ids[lo : lo + batch_size], counts))
            out_d.append(np.asarray(self.doc_ids[docs[hit]], np.int64))
            out_s.append(scores[hit])
            out_r.append(np.broadcast_to(rank, hit.shape)[hit])
            done = min(lo + batch_size, len(queries))
            log.info("%d/%d queries, %.0f queries/s", done, len(queries), done / (time.perf_counter() - start))
        return _hits_frame(out_q, out_d, out_s, out_r)

    def search_exhaustive(self, queries: list[list[str]], k: int, query_ids=None) -> pd.DataFrame:
        """The reference: score every document (bm25s's float32 sums, in query order), then `top_k`."""
        query_ids = np.arange(len(queries)) if query_ids is None else np.asarray(query_ids)
        out_q, out_d, out_s, out_r = [], [], [], []
        for qid, tokens in zip(query_ids, queries):
            ids = self.retriever.get_tokens_ids(tokens)
            if not ids:
                continue
            scores = self.retriever.get_scores_from_ids(ids)
            best = top_k(scores, k)
            out_q.append(np.full(len(best), qid, np.int64))
            out_d.append(np.asarray(self.doc_ids[best], np.int64))
            out_s.append(scores[best].astype(np.float32))
            out_r.append(np.arange(1, len(best) + 1, dtype=np.int32))
        return _hits_frame(out_q, out_d, out_s, out_r)


def search_shard(index_dir: str | Path, queries: list[list[str]], k: int, query_ids=None, threads: int = 1) -> pd.DataFrame:
    """Top-k hits of each tokenized query in one shard index (memory-mapped); see `ShardIndex.search`."""
    log.info("searching %s with %d threads", index_dir, threads)
    return ShardIndex(index_dir).search(queries, k, query_ids, threads)


# --- the search kernel ------------------------------------------------------------------------
# Exhaustive, but cache-blocked and on integers; exact by rescoring. Per query, every posting of
# every query term is added to its document's score, as bm25s does, but the documents are taken
# in blocks of BLOCK ids, so the accumulator (BLOCK int32s, 32 KiB) stays in the core's L1 cache
# instead of one float per document of the shard. The kernel reads its own copy of the postings
# (`save_kernel_layout`): per posting one 32-bit word, a 16-bit doc offset within its block and a
# 16-bit impact, 4 bytes instead of bm25s's 8 and one stream per term, with no float work and no
# block-boundary test per posting, as each term's postings come in runs, one per block. (Queries
# so long that int32 sums could overflow get int64 ones.) Each impact is within 1 of S * score for
# the shard's scale S, so the integer sum U(d) of document d lies within m (the query's term
# count) of S * score(d), up to float32 rounding (relative 2**-24 per term). So every document of
# the exact top k has U(d) >= U_k - 2m - 1 - U_k * (2m + 4) * 2**-24, where U_k is the k-th
# largest U seen so far; a min-heap of the k largest U gives this running gate. Within a block the
# gate is fixed and sums only grow, so a document becomes a candidate at the posting that lifts its
# sum to the gate, once, and no block needs a scan. The terms go from the most postings to the
# fewest, and while the largest impacts of the terms so far add up to less than the gate, no sum
# can reach it: those postings (the common terms' many) are added without the test. A term the
# query repeats is read once, its impacts multiplied by its count (1.10-1.15x on the benchmark's
# queries, whose keywords repeat words). The candidates still above the final gate (typically k
# plus a few) are rescored exactly from their own terms (a forward index: each document's term
# ids and float32 scores, one contiguous read per candidate instead of a search in every query
# term's postings), added in query order as bm25s does, so the scores are bit-identical to its
# exhaustive ones and ties go to the lower doc id.
# Two details matter as much as the method (measured on the 1M-document benchmark): posting
# positions are unsigned, else numba adds a negative-index fix-up to every read (1.16x), and each
# term's next run is prefetched while the other terms' runs of the block are added (1.2x).
# Pruning does not pay on TLM's queries (20 keywords or a whole text, ~36 terms) over short
# documents; `pruning_bounds` in benchmarks/retrieval.py measures its best case (the final
# threshold known from the start), on the synthetic 1M corpus and on the demo's real documents
# alike. MaxScore: 38-39% of the postings are in "essential" lists, but then ~10^5 documents per
# query (1M docs) pass the essential-list bound and need the other terms looked up, which cost
# more than reading those postings (measured). Block-max bounds (as BMP) reach the threshold in
# ~31% of 32-document blocks, and in 1.1-1.4% of 8-document blocks at 0.8 block maxima read per
# posting: no saving either. Within a block, adding the other terms' postings only to documents
# that can still reach the gate lost too (0.4-0.6x), and so did finding the candidates by a scan
# of the block's sums after untested adds (0.7x; 1.04-1.07x only where numba vectorizes the scan,
# which depends on inlining). Measured limits and speed against bm25s: benchmarks/retrieval.py.

BLOCK_BITS = 13
BLOCK = 1 << BLOCK_BITS
LONG_QUERY = 2**31 // 65536  # from this many terms on, a sum of 16-bit impacts could overflow int32
# the files, in the kernel's argument order
KERNEL_LAYOUT = ("postings", "run_start", "run_block", "term_runs", "term_max", "doc_ptr", "doc_terms", "doc_scores")
# in global_stats.json; an index of another format is refused
KERNEL_FORMAT = {"postings": "uint32 offset << 16 | impact", "block": BLOCK, "files": list(KERNEL_LAYOUT)}


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to fetch array[index]'s cache line (llvm.prefetch: a read, kept in all levels).
    A hint only: it never faults, so index may lie past the array's end."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        name = "llvm.prefetch.p0" if str(address.type) == "ptr" else "llvm.prefetch.p0i8"  # opaque pointers or not
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]), name)
        builder.call(fn, [address, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(cache=True, nogil=True)
def _worse(s1, d1, s2, d2):
    return s1 < s2 or (s1 == s2 and d1 > d2)


@numba.njit(cache=True, nogil=True)
def _heap_sift_down(hs, hd, i, n):
    """Restore the min-heap (worst hit on top) below position i."""
    while True:
        child = 2 * i + 1
        if child >= n:
            return
        if child + 1 < n and _worse(hs[child + 1], hd[child + 1], hs[child], hd[child]):
            child += 1
        if not _worse(hs[child], hd[child], hs[i], hd[i]):
            return
        hs[i], hs[child] = hs[child], hs[i]
        hd[i], hd[child] = hd[child], hd[i]
        i = child


@numba.njit(cache=True, nogil=True)
def _heap_push(hs, hd, n, k, s, d):
    """Offer hit (s, d) to a heap of n <= k hits; return the new size."""
    if n < k:
        i = n
        hs[i], hd[i] = s, d
        while i > 0:  # sift up
            parent = (i - 1) // 2
            if not _worse(hs[i], hd[i], hs[parent], hd[parent]):
                break
            hs[i], hs[parent] = hs[parent], hs[i]
            hd[i], hd[parent] = hd[parent], hd[i]
            i = parent
        return n + 1
    if _worse(hs[0], hd[0], s, d):
        hs[0], hd[0] = s, d
        _heap_sift_down(hs, hd, 0, n)
    return n


@numba.njit(cache=True, nogil=True)
def _find_slot(slot_term, t, mask):
    """The slot of term t in an open-addressing table (linear probing, -1 = empty): where t is, or
    the empty slot where it would go."""
    h = (t * 0x9E3779B1) & mask
    while slot_term[h] != -1 and slot_term[h] != t:
        h = (h + 1) & mask
    return h


@numba.njit(cache=True, nogil=True)
def _offer(top, size, k, u):
    """Offer u to the min-heap `top` of the k largest integer sums; return its new size."""
    if size < k:
        i = size
        top[i] = u
        while i > 0 and top[(i - 1) // 2] > top[i]:  # sift up
            top[i], top[(i - 1) // 2] = top[(i - 1) // 2], top[i]
            i = (i - 1) // 2
        return size + 1
    if u > top[0]:
        top[0] = u
        i = 0
        while True:  # sift down
            child = 2 * i + 1
            if child >= size:
                break
            if child + 1 < size and top[child + 1] < top[child]:
                child += 1
            if top[child] >= top[i]:
                break
            top[i], top[child] = top[child], top[i]
            i = child
    return size


@numba.njit(cache=True, nogil=True)
def _distinct(terms):
    """The distinct values of `terms`, ascending, and how often each occurs (uint32)."""
    values = np.sort(terms)
    keep = np.ones(len(values), np.bool_)
    keep[1:] = values[1:] != values[:-1]
    starts = np.append(np.flatnonzero(keep), len(values))
    return values[keep], np.diff(starts).astype(np.uint32)


@numba.njit(cache=True, nogil=True)
def _search_query(
    terms,
    postings,
    run_start,
    run_block,
    term_runs,
    term_max,
    doc_ptr,
    doc_terms,
    doc_scores,
    num_docs,
    k,
    acc,
    cand_d,
    cand_u,
    hs,
    hd,
):
    """Top-k of one query into (hs, hd), best first; returns the number of hits.

    `acc` (BLOCK sums) must be all zero and is left so; `cand_u` has its dtype, int32 unless the
    query is so long (`LONG_QUERY` terms) that the sums could overflow it. The candidate arrays
    hold num_docs. (Growing them here instead made the whole kernel 6x slower: numba then reloads
    them in the loops.)
    """
    m = len(terms)
    if m == 0 or k == 0:
        return 0
    # The block loop takes the terms with the most postings first: their small impacts rarely lift
    # a sum to the gate, so the gate test is predictable for most postings (measured 10% faster).
    # A term the query repeats is read once and its impacts added times its count (keyword queries
    # repeat words across phrases: 27% of the benchmark's postings).
    distinct, count = _distinct(terms)
    nd = len(distinct)
    order = np.argsort(run_start[term_runs[distinct]] - run_start[term_runs[distinct + 1]], kind="mergesort")
    by_size = distinct[order]
    times = count[order]
    cur = term_runs[by_size]  # each term's next run
    bound = np.zeros(nd + 1, np.int64)  # bound[s + 1]: the largest sum terms 0..s (by size) can give
    for s in range(nd):
        bound[s + 1] = bound[s] + term_max[by_size[s]] * np.int64(times[s])
    top = np.empty(k, acc.dtype)
    size, n, gate = 0, 0, 1  # a document is a candidate while U >= gate
    for blk in range((num_docs + BLOCK - 1) // BLOCK):
        base = blk * BLOCK
        first, g = n, acc.dtype.type(gate)  # the gate in the sums' own type
        for s in range(nd):
            r = cur[s]
            c = times[s]
            if r == term_runs[by_size[s] + 1] or run_block[r] != blk:
                continue  # the term has no posting in this block
            if bound[s + 1] < gate:  # no sum can reach the gate yet: add without testing
                for p in range(np.uintp(run_start[r]), np.uintp(run_start[r + 1])):
                    x = postings[p]
                    acc[np.uintp(x >> 16)] += (x & 0xFFFF) * c  # unsigned: numba checks no negative index
            else:
                for p in range(np.uintp(run_start[r]), np.uintp(run_start[r + 1])):
                    x = postings[p]
                    j = np.uintp(x >> 16)
                    a = acc[j]
                    u = a + (x & 0xFFFF) * c
                    acc[j] = u
                    if u >= g and a < g:  # sums only grow: each document reaches the gate at most once
                        cand_d[n] = base | (x >> 16)
                        n += 1
            cur[s] = r + 1
            _prefetch(postings, np.uintp(run_start[r + 1]))  # the term's run in the next block: its first
            _prefetch(postings, np.uintp(run_start[r + 1] + 16))  # two cache lines
        for j in range(first, n):  # the block's candidates, with their full sums
            u = acc[cand_d[j] - base]
            cand_u[j] = u
            size = _offer(top, size, k, u)
            if size == k:  # slack: 2m for the quantization, a relative 2**-24 per term for float32 rounding
                gate = max(gate, top[0] - 2 * m - 1 - ((top[0] >> 24) + 1) * (2 * m + 4))
        acc[:] = 0
    # The survivors' exact float32 scores from their own terms, each document's a contiguous read
    # (prefetched for all of them first), added in query order as bm25s does.
    kept = 0
    for j in range(n):
        if cand_u[j] >= gate:
            cand_d[kept] = cand_d[j]
            _prefetch(doc_ptr, np.uintp(cand_d[j]))
            kept += 1
    for j in range(kept):
        _prefetch(doc_terms, np.uintp(doc_ptr[cand_d[j]]))
        _prefetch(doc_scores, np.uintp(doc_ptr[cand_d[j]]))
    # the query's terms in a hash table (at most half full): a slot's term and first position in
    # the query; nxt: the term's next position (queries may repeat terms)
    mask = 1
    while mask < 2 * m:
        mask = 2 * mask + 1
    slot_term = np.full(mask + 1, -1, np.int64)
    slot_pos = np.empty(mask + 1, np.int64)
    nxt = np.full(m, -1, np.int64)
    for s in range(m - 1, -1, -1):
        h = _find_slot(slot_term, terms[s], mask)
        if slot_term[h] == terms[s]:
            nxt[s] = slot_pos[h]
        slot_term[h], slot_pos[h] = terms[s], s
    score_at = np.zeros(m, np.float32)  # the candidate's score for the query term at each position
    hits = 0
    for j in range(kept):
        d = cand_d[j]
        for p in range(np.uintp(doc_ptr[d]), np.uintp(doc_ptr[d + 1])):
            h = _find_slot(slot_term, doc_terms[p], mask)
            s = slot_pos[h] if slot_term[h] == doc_terms[p] else -1
            while s >= 0:  # every position of the term in the query
                score_at[s] = doc_scores[p]
                s = nxt[s]
        score = np.float32(0)
        for s in range(m):  # in query order; adding a 0 changes no float
            score += score_at[s]
            score_at[s] = 0
        hits = _heap_push(hs, hd, hits, k, score, np.int64(d))
    for j in range(hits - 1, 0, -1):  # heapsort: the worst hit goes to the back
        hs[0], hs[j] = hs[j], hs[0]
        hd[0], hd[j] = hd[j], hd[0]
        _heap_sift_down(hs, hd, 0, j)
    return hits


@numba.njit(cache=True, parallel=True)
def _search_batch(
    terms, ptr, postings, run_start, run_block, term_runs, term_max, doc_ptr, doc_terms, doc_scores, num_docs, k, workers
):
    """Top-k (local doc index, score) of every query, best first, spread over `workers` threads."""
    nq = len(ptr) - 1
    docs = np.zeros((nq, k), np.int64)
    scores = np.zeros((nq, k), np.float32)
    counts = np.zeros(nq, np.int64)
    for w in numba.prange(workers):
        acc = np.zeros(BLOCK, np.int32)  # per worker, reused: it is zero again after every query
        cand_d = np.empty(num_docs, np.int32)  # room for every document (ties)
        cand_u = np.empty(num_docs, np.int32)
        hs = np.empty(k, np.float32)
        hd = np.empty(k, np.int64)
        for q in range(w, nq, workers):  # interleaved, so long and short queries spread evenly
            query = terms[ptr[q] : ptr[q + 1]]
            if len(query) < LONG_QUERY:
                n = _search_query(
                    query,
                    postings,
                    run_start,
                    run_block,
                    term_runs,
                    term_max,
                    doc_ptr,
                    doc_terms,
                    doc_scores,
                    num_docs,
                    k,
                    acc,
                    cand_d,
                    cand_u,
                    hs,
                    hd,
                )
            else:  # int32 sums could overflow: int64 ones, for this query only
                n = _search_query(
                    query,
                    postings,
                    run_start,
                    run_block,
                    term_runs,
                    term_max,
                    doc_ptr,
                    doc_terms,
                    doc_scores,
                    num_docs,
                    k,
                    np.zeros(BLOCK, np.int64),
                    cand_d,
                    np.empty(num_docs, np.int64),
                    hs,
                    hd,
                )
            docs[q, :n] = hd[:n]
            scores[q, :n] = hs[:n]
            counts[q] = n
    return docs, scores, counts


def _hits_frame(q, d, s, r) -> pd.DataFrame:
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    return pd.DataFrame({name: cat(parts, dtype) for (name, dtype), parts in zip(HITS_COLUMNS.items(), (q, d, s, r))})


def top_rows(q: np.ndarray, d: np.ndarray, s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Of hits (query id, doc id, score), the positions of each query's best k, by score then the
    lower doc id, in (query, rank) order, and their 1-based ranks."""
    order = np.lexsort((d, -s, q))
    q = q[order]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    rank = np.arange(len(q)) - np.repeat(starts, np.diff(np.r_[starts, len(q)])) + 1
    keep = rank <= k
    return order[keep], rank[keep].astype(np.int32)


def merge_topk(hits: list[pd.DataFrame], k: int) -> pd.DataFrame:
    """Global top-k per query from per-shard top-k lists (exact: each shard kept its own top-k)."""
    allhits = pd.concat(hits, ignore_index=True)
    rows, rank = top_rows(allhits.query_id.to_numpy(), allhits.doc_id.to_numpy(), allhits.score.to_numpy(), k)
    top = allhits.iloc[rows].reset_index(drop=True)
    top["rank"] = rank
    return top.astype(HITS_COLUMNS)
