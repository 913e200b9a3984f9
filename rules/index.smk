# BM25 index per shard, scored with corpus-wide statistics so that sharded search is exact.


rule count_terms:
    input:
        "results/corpus/shard-{shard}.parquet",
    output:
        directory("results/index/counts/shard-{shard}"),
    log:
        "logs/count_terms/{shard}.log",
    benchmark:
        "logs/benchmark/count_terms/{shard}.tsv"
    cache: CACHING
    conda:
        "../envs/retrieval.yaml"
    threads: config["resources"]["index_threads"]
    resources:
        mem_mb=4000,
    params:
        analyzer=analyzer_params(),
        tlm=TLM_VERSION,  # a new release of the library rebuilds (and misses the cache of) older counts
    script:
        "../workflow/scripts/count_terms.py"


rule corpus_stats:
    input:
        lambda wc: expand("results/index/counts/shard-{shard}", shard=shards()),
    output:
        directory("results/index/stats"),
    log:
        "logs/corpus_stats.log",
    benchmark:
        "logs/benchmark/corpus_stats.tsv"
    cache: CACHING
    conda:
        "../envs/retrieval.yaml"
    params:
        tlm=TLM_VERSION,
    script:
        "../workflow/scripts/corpus_stats.py"


rule build_index:
    input:
        counts="results/index/counts/shard-{shard}",
        stats="results/index/stats",
    output:
        directory("results/index/shard-{shard}"),
    log:
        "logs/build_index/{shard}.log",
    benchmark:
        "logs/benchmark/build_index/{shard}.tsv"
    cache: CACHING
    conda:
        "../envs/retrieval.yaml"
    resources:
        mem_mb=4000,
    params:
        k1=config["bm25"]["k1"],
        b=config["bm25"]["b"],
        layout=INDEX_LAYOUT,  # of the index files (tlm.retrieval); a new one rebuilds older indexes
        tlm=TLM_VERSION,
    script:
        "../workflow/scripts/build_index.py"
