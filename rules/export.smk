# What a user takes away: each trained model with its model card, the best run exported, and
# predictions on the task's `predict` files.


rule package_model:
    input:
        stages=trained_stages,
        metrics="results/metrics/{task}/{run}/seed{seed}.json",
        baselines=expand("results/metrics/{{task}}/{run}/seed{{seed}}.json", run=TFIDF_RUNS),
        train=task_split("train"),
        dev=task_split("dev"),
        test=task_split("test"),
        corpus=lambda wc: [CORPUS] if retriever(wc).source else [],
    output:
        directory("results/models/{task}/{run}/seed{seed}/model"),
    log:
        "logs/package_model/{task}/{run}/seed{seed}.log",
    benchmark:
        "logs/benchmark/package_model/{task}/{run}/seed{seed}.tsv"
    wildcard_constraints:
        run=one_of(TLM_RUNS + PLM_RUNS),
    conda:
        "../envs/train.yaml"
    params:
        info=model_info,
    script:
        "../workflow/scripts/package_model.py"


rule export_best:
    input:
        lambda wc: [
            f"results/models/{wc.task}/{run}/seed{seed}/model" for run, seed in model_keys()
        ],
    output:
        directory("results/export/{task}"),
    log:
        "logs/export_best/{task}.log",
    benchmark:
        "logs/benchmark/export_best/{task}.tsv"
    conda:
        "../envs/train.yaml"
    params:
        models=model_keys(),
    script:
        "../workflow/scripts/export_best.py"


rule predict:
    input:
        model=lambda wc: trained_stages(wc)[-1],
        files=lambda wc: [data_input(f) for f in predict_paths(wc.task)],
    output:
        "results/predictions/{task}/{run}/seed{seed}.parquet",
    log:
        "logs/predict/{task}/{run}/seed{seed}.log",
    benchmark:
        "logs/benchmark/predict/{task}/{run}/seed{seed}.tsv"
    wildcard_constraints:
        run=one_of(TLM_RUNS + PLM_RUNS),
    conda:
        "../envs/train.yaml"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=min(config["resources"]["gpu"], 1),
    params:
        text_column=lambda wc: task_cfg(wc)["text_column"],
        precision=config["trainer"]["precision"],
    script:
        "../workflow/scripts/predict.py"
