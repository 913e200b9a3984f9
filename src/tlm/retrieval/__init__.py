"""Exact sharded BM25 retrieval: every shard is scored with corpus-wide statistics.

bm25s computes IDF and average document length from the documents of one index, so two shards'
scores are not comparable. Here indexing is three steps (each a Snakemake job):

1. `count_terms` (per shard): tokenize once, keep the postings (term, tf) and each term's local df;
2. `merge_stats` (once): global df, document count and average length from all shards' counts;
3. `build_shard_index` (per shard): BM25 (Lucene variant, as bm25s) with the GLOBAL statistics,
   saved as the search kernel reads it: the postings by term (`save_kernel_layout`) and each
   document's terms and term frequencies (`save_forward_index`); `search.ShardIndex.retriever`
   turns a shard into a bm25s index in memory (the exhaustive reference).

A shard's top-K therefore holds the same scores one unsharded index would give, and `merge_topk`
of the shards' top-K (ties broken by the lower doc id) is exactly the unsharded top-K.
`search.ShardIndex.search` finds a shard's top-K with a cache-blocked numba kernel (`kernel`), over
many threads, returning exactly what scoring every document would.

The modules, in the order of the pipeline: `analyzer` (text -> terms), `index` (count_terms,
merge_stats, build_shard_index), `kernel` (the numba search kernel and why it is built so),
`search` (ShardIndex, retrieve_shard: one shard's top-K), `merge` (the shards' top-K merged into
the global top-K, and what a user must hear of it). How S is chosen (from the hits, or otherwise)
is the retrievers table, `tlm.retrievers`.
"""

# The layout of an index's files (tlm.retrieval.kernel.KERNEL_FORMAT): a parameter of rule
# build_index, so that a new layout rebuilds older indexes; ShardIndex refuses other layouts.
INDEX_LAYOUT = 5
