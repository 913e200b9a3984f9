# Data selection: each training example is a query; its top-K documents form the external data S.


rule make_queries:
    input:
        task_split("train"),
    output:
        "results/retrieval/{task}/queries.parquet",
    log:
        "logs/make_queries/{task}.log",
    benchmark:
        "logs/benchmark/make_queries/{task}.tsv"
    conda:
        "../envs/retrieval.yaml"
    params:
        mode=lambda wc: task_cfg(wc)["query_mode"],
        num_keywords=lambda wc: (
            task_cfg(wc)["num_keywords"] if task_cfg(wc)["query_mode"] == "keywords" else None
        ),
    script:
        "../workflow/scripts/make_queries.py"


# One job per (task, shard): a task's hits depend on its queries and K only, so adding a task or
# changing its K plans that task's jobs alone. No job group: Snakemake's --group-components puts a
# job in two groups when a checkpoint (shard_corpus) is upstream (README, "Running on a cluster").
rule retrieve:
    input:
        index="results/index/shard-{shard}",
        queries="results/retrieval/{task}/queries.parquet",
    output:
        "results/retrieval/{task}/hits-{shard}.parquet",
    log:
        "logs/retrieve/{task}/{shard}.log",
    benchmark:
        "logs/benchmark/retrieve/{task}/{shard}.tsv"
    conda:
        "../envs/retrieval.yaml"
    threads: config["resources"]["index_threads"]
    params:
        top_k=lambda wc: task_cfg(wc)["top_k"],
        analyzer=analyzer_params(),
    script:
        "../workflow/scripts/retrieve.py"


rule merge_topk:
    input:
        hits=lambda wc: expand(
            "results/retrieval/{task}/hits-{shard}.parquet", task=wc.task, shard=shards()
        ),
        queries="results/retrieval/{task}/queries.parquet",
        stats="results/index/stats",
    output:
        "results/retrieval/{task}/topk.parquet",
    log:
        "logs/merge_topk/{task}.log",
    benchmark:
        "logs/benchmark/merge_topk/{task}.tsv"
    conda:
        "../envs/retrieval.yaml"
    params:
        top_k=lambda wc: task_cfg(wc)["top_k"],
        analyzer=config["bm25"]["analyzer"],
    script:
        "../workflow/scripts/merge_topk.py"


# One rule per retriever that writes an S (tlm.retrievers): select_external (bm25: the union of the
# top-K lists), select_random (the ablation), and whatever rows are added to the table.
for _retriever in RETRIEVERS.values():
    if _retriever.rule is None:
        continue

    rule:
        name:
            _retriever.rule
        input:
            **_retriever.inputs,
            # the corpus's shards, where S is read from the corpus (fetched from storage with it)
            shards=corpus_shards if CORPUS in _retriever.inputs.values() else [],
        output:
            f"results/retrieval/{{task}}/{_retriever.source}.parquet",
        log:
            f"logs/{_retriever.rule}/{{task}}.log",
        benchmark:
            f"logs/benchmark/{_retriever.rule}/{{task}}.tsv"
        conda:
            "../envs/retrieval.yaml"
        params:
            **_retriever.params(config),
        script:
            "../workflow/scripts/select.py"
