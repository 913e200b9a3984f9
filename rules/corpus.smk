# Inputs: the general corpus D cut into Parquet shards, and each task's validated splits.
# Sharding is three steps (tlm.corpus.shards): shard_part reads and cleans one part of the input
# files (a job per part: consecutive files grouped by bytes, corpus.part_mb); the shard_corpus
# checkpoint dedups across parts and assigns the global ids from the parts' counts and digests
# (never reading a text); write_shard writes each shard. A shard's job reruns when its plan
# changes (its params), not on every new manifest: dropped.npz is read as ancient.


rule shard_part:
    input:
        lambda wc: [data_input(f) for f in corpus_parts()[wc.part]],
    output:
        directory("results/corpus/parts/{part}"),
    log:
        "logs/shard_part/{part}.log",
    benchmark:
        "logs/benchmark/shard_part/{part}.tsv"
    cache: CACHING
    conda:
        "../envs/retrieval.yaml"
    resources:
        mem_mb=4000,
    params:
        tlm=TLM_VERSION,
        text_field=config["corpus"]["text_field"],
        dedup=config["corpus"]["dedup"],
        min_chars=config["corpus"]["min_chars"],
        max_doc_chars=config["corpus"]["max_doc_chars"],
        long_docs=config["corpus"]["long_docs"],
        max_bad_share=config["corpus"]["max_bad_share"],
    script:
        "../workflow/scripts/shard_part.py"


checkpoint shard_corpus:
    input:
        lambda wc: expand("results/corpus/parts/{part}", part=corpus_parts()),
    output:
        manifest="results/corpus/manifest.json",
        dropped="results/corpus/dropped.npz",
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
        parts=lambda wc: list(corpus_parts()),
        shard_size=config["corpus"]["shard_size"],
        dedup=config["corpus"]["dedup"],
        tlm=TLM_VERSION,
    script:
        "../workflow/scripts/shard_corpus.py"


rule write_shard:
    input:
        part=lambda wc: f"results/corpus/parts/{shard_plan(wc.shard)['part']}",
        dropped=ancient("results/corpus/dropped.npz"),
    output:
        "results/corpus/shard-{shard}.parquet",
    log:
        "logs/write_shard/{shard}.log",
    benchmark:
        "logs/benchmark/write_shard/{shard}.tsv"
    cache: CACHING
    conda:
        "../envs/retrieval.yaml"
    params:
        plan=lambda wc: shard_plan(wc.shard),
        tlm=TLM_VERSION,
    script:
        "../workflow/scripts/write_shard.py"


rule prepare_task:
    input:
        train=lambda wc: data_input(task_cfg(wc)["train"]),
        dev=lambda wc: data_input(task_cfg(wc)["dev"]),
        test=lambda wc: data_input(task_cfg(wc)["test"]),
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
