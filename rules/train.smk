# Training: a task-driven WordPiece vocabulary, tokens cached once, stage 1 (MLM on S and T + task
# loss), stage 2 (task only).


rule train_tokenizer:
    input:
        train=task_split("train"),
        external="results/retrieval/{task}/external.parquet" if config["tokenizer"]["path"] is None else [],
        local=config["tokenizer"]["path"] or [],
    output:
        directory("results/models/{task}/tokenizer"),
    log:
        "logs/train_tokenizer/{task}.log",
    benchmark:
        "logs/benchmark/train_tokenizer/{task}.tsv"
    conda:
        "../envs/train.yaml"
    params:
        tokenizer=sorted_keys(config["tokenizer"]),
    script:
        "../workflow/scripts/train_tokenizer.py"


rule tokenize:
    input:
        tokenizer="results/models/{task}/tokenizer",
        texts=token_source,
        labels="results/tasks/{task}/labels.json",
    output:
        directory("results/models/{task}/tokens/{source}"),
    log:
        "logs/tokenize/{task}/{source}.log",
    benchmark:
        "logs/benchmark/tokenize/{task}/{source}.tsv"
    conda:
        "../envs/train.yaml"
    params:
        max_seq_length=tokens_max_length,
        with_labels=lambda wc: wc.source in ("train", "dev", "test"),
        max_rank=max_rank,
    script:
        "../workflow/scripts/tokenize.py"


rule train_stage1:
    input:
        tokenizer=run_tokenizer,
        tokens=run_tokens,
        external=external_tokens,
        labels="results/tasks/{task}/labels.json",
    output:
        directory("results/models/{task}/{run}/seed{seed}/stage1"),
    log:
        log="logs/train_stage1/{task}/{run}/seed{seed}.log",
        csv="logs/train_stage1/{task}/{run}/seed{seed}.csv",
    benchmark:
        "logs/benchmark/train_stage1/{task}/{run}/seed{seed}.tsv"
    wildcard_constraints:
        run=one_of(TLM_RUNS),
    conda:
        "../envs/train.yaml"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["gpu"],
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        settings=stage_settings("stage1"),
    script:
        "../workflow/scripts/train_stage.py"


rule train_stage2:
    input:
        stage1="results/models/{task}/{run}/seed{seed}/stage1",
        tokenizer=run_tokenizer,
        tokens=run_tokens,
        labels="results/tasks/{task}/labels.json",
    output:
        directory("results/models/{task}/{run}/seed{seed}/stage2"),
    log:
        log="logs/train_stage2/{task}/{run}/seed{seed}.log",
        csv="logs/train_stage2/{task}/{run}/seed{seed}.csv",
    benchmark:
        "logs/benchmark/train_stage2/{task}/{run}/seed{seed}.tsv"
    wildcard_constraints:
        run=one_of(TLM_RUNS),
    conda:
        "../envs/train.yaml"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["gpu"],
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        settings=stage_settings("stage2"),
    script:
        "../workflow/scripts/train_stage.py"


# Runs from a pretrained checkpoint (plm, and tlm runs with `pretrained`) read the task splits and
# their external data in the checkpoint's vocabulary, tokenized once per run. The plm baseline is
# that encoder fine-tuned with the stage2 settings.


rule tokenize_plm:
    input:
        tokenizer=plm_checkpoint,
        texts=token_source,
        labels="results/tasks/{task}/labels.json",
    output:
        directory("results/models/{task}/{run}/tokens/{source}"),
    log:
        "logs/tokenize_plm/{task}/{run}/{source}.log",
    benchmark:
        "logs/benchmark/tokenize_plm/{task}/{run}/{source}.tsv"
    wildcard_constraints:
        run=one_of(CHECKPOINT_RUNS),
    conda:
        "../envs/train.yaml"
    params:
        max_seq_length=lambda wc: run_settings(config, wc.run, 0, wc.task)["model"]["max_seq_length"],
        with_labels=lambda wc: wc.source in ("train", "dev", "test"),
        max_rank=max_rank,
    script:
        "../workflow/scripts/tokenize.py"


rule finetune_plm:
    input:
        tokenizer=plm_checkpoint,
        tokens=run_tokens,
        labels="results/tasks/{task}/labels.json",
    output:
        directory("results/models/{task}/{run}/seed{seed}/stage2"),
    log:
        log="logs/finetune_plm/{task}/{run}/seed{seed}.log",
        csv="logs/finetune_plm/{task}/{run}/seed{seed}.csv",
    benchmark:
        "logs/benchmark/finetune_plm/{task}/{run}/seed{seed}.tsv"
    wildcard_constraints:
        run=one_of(PLM_RUNS),
    conda:
        "../envs/train.yaml"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=config["resources"]["gpu"],
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        settings=stage_settings("stage2"),
    script:
        "../workflow/scripts/train_stage.py"
