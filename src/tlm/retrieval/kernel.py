"""The search kernel: one shard's exact top-k of a batch of queries, in numba.

Exhaustive, but cache-blocked and on integers; exact by rescoring. Per query, every posting of
every query term is added to its document's score, as bm25s does, but the documents are taken
in blocks of BLOCK ids, so the accumulator (BLOCK int32s, 32 KiB) stays in the core's L1 cache
instead of one float per document of the shard. The kernel reads its own copy of the postings
(`save_kernel_layout`): per posting one 32-bit word, a 16-bit doc offset within its block and a
16-bit impact, 4 bytes instead of bm25s's 8 and one stream per term, with no float work and no
block-boundary test per posting, as each term's postings come in runs, one per block. (Queries
so long that int32 sums could overflow get int64 ones.) Each impact is within 1 of S * score for
the shard's scale S, so the integer sum U(d) of document d lies within m (the query's term
count) of S * score(d), up to float32 rounding (relative 2**-24 per term). So every document of
the exact top k has U(d) >= U_k - 2m - 1 - U_k * (2m + 4) * 2**-24, where U_k is the k-th
largest U seen so far; a min-heap of the k largest U gives this running gate. Within a block the
gate is fixed and sums only grow, so a document becomes a candidate at the posting that lifts its
sum to the gate, once, and no block needs a scan. The terms go from the most postings to the
fewest, and while the largest impacts of the terms so far add up to less than the gate, no sum
can reach it: those postings (the common terms' many) are added without the test. A term the
query repeats is read once, its impacts multiplied by its count (1.10-1.15x on the benchmark's
queries, whose keywords repeat words). The candidates still above the final gate (typically k
plus a few) are rescored exactly from their own terms (a forward index: each document's term
ids, as 16-bit differences, and term frequencies, 3 bytes a posting, one contiguous read per
candidate instead of a search in every query term's postings), each posting's float32 score
computed by the same function (`bm25_score`) as the build's, added in query order as bm25s does,
so the scores are bit-identical to its exhaustive ones and ties go to the lower doc id.
Two details matter as much as the method (measured on the 1M-document benchmark): posting
positions are unsigned, else numba adds a negative-index fix-up to every read (1.16x), and each
term's next run is prefetched while the other terms' runs of the block are added (1.2x).
Pruning does not pay on TLM's queries (20 keywords or a whole text, ~36 terms) over short
documents; `pruning_bounds` in benchmarks/retrieval.py measures its best case (the final
threshold known from the start), on the synthetic 1M corpus and on the demo's real documents
alike. MaxScore: 38-39% of the postings are in "essential" lists, but then ~10^5 documents per
query (1M docs) pass the essential-list bound and need the other terms looked up, which cost
more than reading those postings (measured). Block-max bounds (as BMP) reach the threshold in
~31% of 32-document blocks, and in 1.1-1.4% of 8-document blocks at 0.8 block maxima read per
posting: no saving either. Within a block, adding the other terms' postings only to documents
that can still reach the gate lost too (0.4-0.6x), and so did finding the candidates by a scan
of the block's sums after untested adds (0.7x; 1.04-1.07x only where numba vectorizes the scan,
which depends on inlining). Measured limits and speed against bm25s: benchmarks/retrieval.py.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from tlm.retrieval import INDEX_LAYOUT

BLOCK_BITS = 13
BLOCK = 1 << BLOCK_BITS
LONG_QUERY = 2**31 // 65536  # from this many terms on, a sum of 16-bit impacts could overflow int32
# the files, in the kernel's argument order (tlm.retrieval.index: save_kernel_layout and
# save_forward_index say what each holds)
KERNEL_LAYOUT = (
    "postings",
    "run_start",
    "run_block",
    "term_runs",
    "term_max",
    "doc_ptr",
    "doc_terms",
    "doc_tf",
    "doc_len",
    "term_idf",
    "term_escape_at",
    "term_escape_id",
    "tf_escape_at",
    "tf_escape",
)
# in global_stats.json; an index of another format is refused. "format" counts the layouts
# (4: a bm25s index and a forward index of float32 scores; 5: no bm25s copy, a forward index of
# term id differences and term frequencies, offsets in the narrowest type).
KERNEL_FORMAT = {
    "format": INDEX_LAYOUT,
    "postings": "uint32 offset << 16 | impact",
    "block": BLOCK,
    "files": list(KERNEL_LAYOUT),
}


@numba.njit(cache=True, nogil=True)
def bm25_score(idf, tf, doc_len, k1, b, avg_doc_len):
    """A posting's BM25 score (Lucene's, as bm25s), computed in float64 and rounded to float32: one
    function for the index build and the kernel's rescoring, so their scores agree bit for bit."""
    return np.float32(idf * tf / (tf + k1 * (1 - b + b * doc_len / avg_doc_len)))


@numba.njit(cache=True, nogil=True)
def posting_scores(idf, tf, doc_len, k1, b, avg_doc_len):
    """`bm25_score` of every posting (arrays of its term's idf, its tf and its document's length)."""
    out = np.empty(len(tf), np.float32)
    for p in range(len(tf)):
        out[p] = bm25_score(
            np.float64(idf[p]), np.float64(tf[p]), np.float64(doc_len[p]), k1, b, avg_doc_len
        )
    return out


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to fetch array[index]'s cache line (llvm.prefetch: a read, kept in all levels).
    A hint only: it never faults, so index may lie past the array's end."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        name = (
            "llvm.prefetch.p0" if str(address.type) == "ptr" else "llvm.prefetch.p0i8"
        )  # opaque pointers or not
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]), name
        )
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
def _search_query(terms, layout, bm25, num_docs, k, acc, cand_d, cand_u, hs, hd):
    """Top-k of one query into (hs, hd), best first; returns the number of hits.

    `layout`: the index's arrays, in KERNEL_LAYOUT's order; `bm25`: (k1, b, average document
    length) of its scores. `acc` (BLOCK sums) must be all zero
    and is left so; `cand_u` has its dtype, int32 unless the query is so long (`LONG_QUERY` terms)
    that the sums could overflow it. The candidate arrays hold num_docs. (Growing them here
    instead made the whole kernel 6x slower: numba then reloads them in the loops.)
    """
    if len(terms) == 0 or k == 0:
        return 0
    n, gate = _candidates(terms, layout, num_docs, k, acc, cand_d, cand_u)
    return _rescore(terms, layout, bm25, k, n, gate, cand_d, cand_u, hs, hd)


@numba.njit(cache=True, nogil=True)
def _candidates(terms, layout, num_docs, k, acc, cand_d, cand_u):
    """The block loop: every document whose integer sum reached the running gate, in cand_d (its
    sum in cand_u); returns their number and the final gate."""
    postings, run_start, run_block, term_runs, term_max = (
        layout[0],
        layout[1],
        layout[2],
        layout[3],
        layout[4],
    )
    m = len(terms)
    # The block loop takes the terms with the most postings first: their small impacts rarely lift
    # a sum to the gate, so the gate test is predictable for most postings (measured 10% faster).
    # A term the query repeats is read once and its impacts added times its count (keyword queries
    # repeat words across phrases: 27% of the benchmark's postings).
    distinct, count = _distinct(terms)
    nd = len(distinct)
    order = np.argsort(
        run_start[term_runs[distinct]].astype(np.int64) - run_start[term_runs[distinct + 1]],
        kind="mergesort",
    )
    by_size = distinct[order]
    times = count[order]
    cur = term_runs[by_size]  # each term's next run
    bound = np.zeros(
        nd + 1, np.int64
    )  # bound[s + 1]: the largest sum terms 0..s (by size) can give
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
                    acc[np.uintp(x >> 16)] += (
                        x & 0xFFFF
                    ) * c  # unsigned: numba checks no negative index
            else:
                for p in range(np.uintp(run_start[r]), np.uintp(run_start[r + 1])):
                    x = postings[p]
                    j = np.uintp(x >> 16)
                    a = acc[j]
                    u = a + (x & 0xFFFF) * c
                    acc[j] = u
                    if (
                        u >= g and a < g
                    ):  # sums only grow: each document reaches the gate at most once
                        cand_d[n] = base | (x >> 16)
                        n += 1
            cur[s] = r + 1
            _prefetch(
                postings, np.uintp(run_start[r + 1])
            )  # the term's run in the next block: its first
            _prefetch(postings, np.uintp(run_start[r + 1] + 16))  # two cache lines
        for j in range(first, n):  # the block's candidates, with their full sums
            u = acc[cand_d[j] - base]
            cand_u[j] = u
            size = _offer(top, size, k, u)
            if (
                size == k
            ):  # slack: 2m for the quantization, a relative 2**-24 per term for float32 rounding
                gate = max(gate, top[0] - 2 * m - 1 - ((top[0] >> 24) + 1) * (2 * m + 4))
        acc[:] = 0
    return n, gate


@numba.njit(cache=True, nogil=True)
def _rescore(terms, layout, bm25, k, n, gate, cand_d, cand_u, hs, hd):
    """The exact float32 scores of the candidates still above the gate, from their own terms (each
    document's a contiguous read, prefetched for all of them first: term id differences and term
    frequencies, `bm25_score` of the query's terms), added in query order as bm25s does; the top k
    into (hs, hd), best first. Returns the number of hits."""
    doc_ptr, doc_terms, doc_tf, doc_len, term_idf = (
        layout[5],
        layout[6],
        layout[7],
        layout[8],
        layout[9],
    )
    term_escape_at, term_escape_id, tf_escape_at, tf_escape = (
        layout[10],
        layout[11],
        layout[12],
        layout[13],
    )
    k1, b, avg_doc_len = bm25
    m = len(terms)
    kept = 0
    for j in range(n):
        if cand_u[j] >= gate:
            cand_d[kept] = cand_d[j]
            _prefetch(doc_ptr, np.uintp(cand_d[j]))
            kept += 1
    for j in range(kept):
        _prefetch(doc_terms, np.uintp(doc_ptr[cand_d[j]]))
        _prefetch(doc_tf, np.uintp(doc_ptr[cand_d[j]]))
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
        t = np.int64(0)
        for p in range(np.uintp(doc_ptr[d]), np.uintp(doc_ptr[d + 1])):
            step = doc_terms[p]
            if step == 0xFFFF:  # a difference too large for 16 bits: the term id itself
                t = term_escape_id[np.searchsorted(term_escape_at, p)]
            else:
                t += step
            h = _find_slot(slot_term, t, mask)
            if slot_term[h] != t:
                continue
            tf = np.float64(doc_tf[p])
            if tf == 0:  # 256 or more
                tf = np.float64(tf_escape[np.searchsorted(tf_escape_at, p)])
            score = bm25_score(term_idf[t], tf, np.float64(doc_len[d]), k1, b, avg_doc_len)
            s = slot_pos[h]
            while s >= 0:  # every position of the term in the query
                score_at[s] = score
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
def search_batch(terms, ptr, layout, bm25, num_docs, k, workers):
    """Top-k (local doc index, score) of every query (its terms: terms[ptr[q]:ptr[q + 1]]), best
    first, spread over `workers` threads; `layout`: the index's arrays in KERNEL_LAYOUT's order,
    `bm25`: (k1, b, average document length) of its scores."""
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
                n = _search_query(query, layout, bm25, num_docs, k, acc, cand_d, cand_u, hs, hd)
            else:  # int32 sums could overflow: int64 ones, for this query only
                wide = np.zeros(BLOCK, np.int64)
                n = _search_query(
                    query,
                    layout,
                    bm25,
                    num_docs,
                    k,
                    wide,
                    cand_d,
                    np.empty(num_docs, np.int64),
                    hs,
                    hd,
                )
            docs[q, :n] = hd[:n]
            scores[q, :n] = hs[:n]
            counts[q] = n
    return docs, scores, counts
