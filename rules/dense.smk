# Dense and hybrid retrieval (tlm.retrieval.dense): the corpus embedded once per shard by a sentence
# encoder (resumable: a finished shard is never redone), each task's training texts embedded as its
# queries, the exact inner-product top-K per (task, shard), merged across shards as BM25's. Only the
# encoder's settings are params of the embedding jobs: a new K searches again, never re-embeds.


rule embed_shard:
    input:
        shard="results/corpus/shard-{shard}.parquet",
        corpus=ancient(CORPUS),  # for the number of documents (the time estimate) only
    output:
        directory("results/dense/shard-{shard}"),
    log:
        "logs/embed_shard/{shard}.log",
    benchmark:
        "logs/benchmark/embed_shard/{shard}.tsv"
    conda:
        "../envs/train.yaml"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=min(config["resources"]["gpu"], 1),
        mem_mb=4000,
    params:
        encoder=dense_encoder(),
    script:
        "../workflow/scripts/embed_shard.py"


# Every shard embedded alike (one encoder, dims, dtype): a stale shard is refused here.
rule dense_manifest:
    input:
        lambda wc: expand("results/dense/shard-{shard}", shard=shards()),
    output:
        "results/dense/manifest.json",
    log:
        "logs/dense_manifest.log",
    conda:
        "../envs/retrieval.yaml"
    script:
        "../workflow/scripts/dense_manifest.py"


rule embed_queries:
    input:
        task_split("train"),
    output:
        npy="results/retrieval/{task}/dense/queries.npy",
        meta="results/retrieval/{task}/dense/queries.json",
    log:
        "logs/embed_queries/{task}.log",
    benchmark:
        "logs/benchmark/embed_queries/{task}.tsv"
    conda:
        "../envs/train.yaml"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=min(config["resources"]["gpu"], 1),
    params:
        encoder=dense_encoder(),
    script:
        "../workflow/scripts/embed_queries.py"


# {ranking}: dense (the dense retriever's top-K) or hybrid (the dense top-N that rrf fuses)
rule dense_search:
    input:
        shard="results/dense/shard-{shard}",
        queries="results/retrieval/{task}/dense/queries.npy",
    output:
        "results/retrieval/{task}/{ranking}/dense-hits-{shard}.parquet",
    log:
        "logs/dense_search/{task}/{ranking}/{shard}.log",
    benchmark:
        "logs/benchmark/dense_search/{task}/{ranking}/{shard}.tsv"
    wildcard_constraints:
        ranking="dense|hybrid",
    conda:
        "../envs/retrieval.yaml"
    params:
        top_k=dense_depth,
    script:
        "../workflow/scripts/dense_search.py"


rule dense_merge:
    input:
        hits=lambda wc: expand(
            "results/retrieval/{task}/{ranking}/dense-hits-{shard}.parquet",
            task=wc.task,
            ranking=wc.ranking,
            shard=shards(),
        ),
        queries="results/retrieval/{task}/dense/queries.npy",
        manifest="results/dense/manifest.json",
    output:
        "results/retrieval/{task}/{ranking}/dense-topk.parquet",
    log:
        "logs/dense_merge/{task}/{ranking}.log",
    wildcard_constraints:
        ranking="dense|hybrid",
    conda:
        "../envs/retrieval.yaml"
    params:
        top_k=dense_depth,
    script:
        "../workflow/scripts/dense_merge.py"


# hybrid's BM25 list: the top-N of the BM25 queries, searched and merged as the bm25 retriever's
# top-K (same scripts), at depth N
rule bm25_candidates:
    input:
        index="results/index/shard-{shard}",
        queries="results/retrieval/{task}/queries.parquet",
    output:
        "results/retrieval/{task}/hybrid/bm25-hits-{shard}.parquet",
    log:
        "logs/bm25_candidates/{task}/{shard}.log",
    benchmark:
        "logs/benchmark/bm25_candidates/{task}/{shard}.tsv"
    conda:
        "../envs/retrieval.yaml"
    threads: config["resources"]["index_threads"]
    params:
        top_k=config["hybrid"]["candidates"],
        analyzer=analyzer_params(),
    script:
        "../workflow/scripts/retrieve.py"


rule merge_candidates:
    input:
        hits=lambda wc: expand(
            "results/retrieval/{task}/hybrid/bm25-hits-{shard}.parquet",
            task=wc.task,
            shard=shards(),
        ),
        queries="results/retrieval/{task}/queries.parquet",
        stats="results/index/stats",
    output:
        "results/retrieval/{task}/hybrid/bm25-topk.parquet",
    log:
        "logs/merge_candidates/{task}.log",
    conda:
        "../envs/retrieval.yaml"
    params:
        top_k=config["hybrid"]["candidates"],
        analyzer=config["bm25"]["analyzer"],
    script:
        "../workflow/scripts/merge_topk.py"
