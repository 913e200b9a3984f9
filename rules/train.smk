# Training: a task-driven WordPiece vocabulary, tokens cached once, stage 1 (MLM on S and T + task
# loss), stage 2 (task only).


rule train_tokenizer:
    input:
        train=task_split("train"),
        external=(
            "results/retrieval/{task}/external.parquet"
            if config["tokenizer"]["path"] is None
            else []
        ),
        local=data_input(config["tokenizer"]["path"]) if config["tokenizer"]["path"] else [],
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


# The training rules, one script told apart by the rule's name: a tlm run's stage 1 (MLM on S and T
# + task loss) and stage 2 (task only, from stage 1), and a plm run's fine-tuning (its stage 2, from
# the pretrained checkpoint).
TRAINING_RULES = {  # rule: (stage, runs, inputs beyond the run's tokenizer, tokens and labels)
    "train_stage1": ("stage1", TLM_RUNS, {"external": external_tokens}),
    "train_stage2": (
        "stage2",
        TLM_RUNS,
        {"stage1": "results/models/{task}/{run}/seed{seed}/stage1"},
    ),
    "finetune_plm": ("stage2", PLM_RUNS, {}),
}
for _rule, (_stage, _runs, _inputs) in TRAINING_RULES.items():

    rule:
        name:
            _rule
        input:
            **_inputs,
            tokenizer=run_tokenizer,
            tokens=run_tokens,
            labels="results/tasks/{task}/labels.json",
        output:
            directory(f"results/models/{{task}}/{{run}}/seed{{seed}}/{_stage}"),
        log:
            log=f"logs/{_rule}/{{task}}/{{run}}/seed{{seed}}.log",
            csv=f"logs/{_rule}/{{task}}/{{run}}/seed{{seed}}.csv",
        benchmark:
            f"logs/benchmark/{_rule}/{{task}}/{{run}}/seed{{seed}}.tsv"
        wildcard_constraints:
            run=one_of(_runs),
        conda:
            "../envs/train.yaml"
        threads: config["resources"]["train_threads"]
        resources:
            gpu=config["resources"]["gpu"],
            mem_mb=config["resources"]["train_mem_mb"],
            runtime=config["resources"]["train_runtime"],
        params:
            settings=stage_settings(_stage),
        script:
            "../workflow/scripts/train_stage.py"


# Runs from a pretrained checkpoint (plm, and tlm runs with `pretrained`) read the task splits and
# their external data in the checkpoint's vocabulary, tokenized once per run. The plm baseline is
# that encoder fine-tuned with the stage2 settings (finetune_plm, above).


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
        max_seq_length=lambda wc: run_settings(config, wc.run, 0, wc.task)["model"][
            "max_seq_length"
        ],
        with_labels=lambda wc: wc.source in ("train", "dev", "test"),
        max_rank=max_rank,
    script:
        "../workflow/scripts/tokenize.py"
