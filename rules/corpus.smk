# Inputs: the general corpus D cut into Parquet shards, and each task's validated splits.


checkpoint shard_corpus:
    input:
        corpus_files(),
    output:
        directory("results/corpus"),
    log:
        "logs/shard_corpus.log",
    benchmark:
        "logs/benchmark/shard_corpus.tsv"
    cache: CACHING
    conda:
        "../envs/retrieval.yaml"
    resources:
        mem_mb=4000,
    params:
        shard_size=config["corpus"]["shard_size"],
        tlm=TLM_VERSION,
        text_field=config["corpus"]["text_field"],
        dedup=config["corpus"]["dedup"],
        min_chars=config["corpus"]["min_chars"],
        max_doc_chars=config["corpus"]["max_doc_chars"],
        long_docs=config["corpus"]["long_docs"],
        max_bad_share=config["corpus"]["max_bad_share"],
    script:
        "../workflow/scripts/shard_corpus.py"


rule prepare_task:
    input:
        train=lambda wc: task_cfg(wc)["train"],
        dev=lambda wc: task_cfg(wc)["dev"],
        test=lambda wc: task_cfg(wc)["test"],
    output:
        train=task_split("train"),
        dev=task_split("dev"),
        test=task_split("test"),
        labels="results/tasks/{task}/labels.json",
        hygiene="results/tasks/{task}/hygiene.json",
    log:
        "logs/prepare_task/{task}.log",
    benchmark:
        "logs/benchmark/prepare_task/{task}.tsv"
    conda:
        "../envs/retrieval.yaml"
    params:
        text_column=lambda wc: task_cfg(wc)["text_column"],
        label_column=lambda wc: task_cfg(wc)["label_column"],
    script:
        "../workflow/scripts/prepare_task.py"
