# Inputs: the general corpus D cut into Parquet shards, and each task's validated splits.


checkpoint shard_corpus:
    input:
        corpus_files(),
    output:
        directory("results/corpus"),
    log:
        "logs/shard_corpus.log",
    conda:
        "../envs/retrieval.yaml"
    resources:
        mem_mb=4000,
    params:
        shard_size=config["corpus"]["shard_size"],
        text_field=config["corpus"]["text_field"],
        dedup=config["corpus"]["dedup"],
        min_chars=config["corpus"]["min_chars"],
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
    log:
        "logs/prepare_task/{task}.log",
    conda:
        "../envs/retrieval.yaml"
    params:
        text_column=lambda wc: task_cfg(wc)["text_column"],
        label_column=lambda wc: task_cfg(wc)["label_column"],
    script:
        "../workflow/scripts/prepare_task.py"
