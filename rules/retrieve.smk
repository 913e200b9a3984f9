# Data selection: each training example is a query; its top-K documents form the external data S.


rule make_queries:
    input:
        task_split("train"),
    output:
        "results/retrieval/{task}/queries.parquet",
    params:
        mode=lambda wc: task_cfg(wc)["query_mode"],
        num_keywords=lambda wc: task_cfg(wc)["num_keywords"],
    log:
        "logs/make_queries/{task}.log",
    conda:
        "../envs/retrieval.yaml"
    script:
        "../workflow/scripts/make_queries.py"


rule retrieve:
    input:
        index="results/index/shard-{shard}",
        queries="results/retrieval/{task}/queries.parquet",
    output:
        "results/retrieval/{task}/hits-{shard}.parquet",
    params:
        top_k=lambda wc: task_cfg(wc)["top_k"],
        analyzer=analyzer_params(),
    threads: config["resources"]["index_threads"]
    log:
        "logs/retrieve/{task}-{shard}.log",
    conda:
        "../envs/retrieval.yaml"
    script:
        "../workflow/scripts/retrieve.py"


rule merge_topk:
    input:
        lambda wc: expand("results/retrieval/{task}/hits-{shard}.parquet", task=wc.task, shard=shards()),
    output:
        "results/retrieval/{task}/topk.parquet",
    params:
        top_k=lambda wc: task_cfg(wc)["top_k"],
    log:
        "logs/merge_topk/{task}.log",
    conda:
        "../envs/retrieval.yaml"
    script:
        "../workflow/scripts/merge_topk.py"


rule select_external:
    input:
        topk="results/retrieval/{task}/topk.parquet",
        corpus="results/corpus",
    output:
        "results/retrieval/{task}/external.parquet",
    log:
        "logs/select_external/{task}.log",
    conda:
        "../envs/retrieval.yaml"
    script:
        "../workflow/scripts/select_external.py"


rule select_random:
    input:
        external="results/retrieval/{task}/external.parquet",
        corpus="results/corpus",
    output:
        "results/retrieval/{task}/random.parquet",
    params:
        seed=config["seed"],
    log:
        "logs/select_random/{task}.log",
    conda:
        "../envs/retrieval.yaml"
    script:
        "../workflow/scripts/select_random.py"
