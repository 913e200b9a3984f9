# Evaluation on the test split, with the cost of each run beside its quality, baselines, and the
# summary table (mean +- std over seeds).


rule evaluate:
    input:
        stages=trained_stages,
        tokens=test_tokens,
        external=external_data,
    output:
        metrics="results/metrics/{task}/{run}/seed{seed}.json",
        predictions="results/metrics/{task}/{run}/seed{seed}-test.parquet",
    log:
        "logs/evaluate/{task}/{run}/seed{seed}.log",
    benchmark:
        "logs/benchmark/evaluate/{task}/{run}/seed{seed}.tsv"
    wildcard_constraints:
        run=one_of(TLM_RUNS + PLM_RUNS),
    conda:
        "../envs/train.yaml"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=min(config["resources"]["gpu"], 1),
    params:
        precision=config["trainer"]["precision"],
        max_rank=max_rank,
        pretraining=lambda wc: config["runs"][wc.run].get("pretraining"),
    script:
        "../workflow/scripts/evaluate.py"


rule train_tfidf:
    input:
        multiext(
            "results/tasks/{task}/", "train.parquet", "dev.parquet", "test.parquet", "labels.json"
        ),
    output:
        "results/metrics/{task}/{run}/seed{seed}.json",
    log:
        "logs/train_tfidf/{task}/{run}/seed{seed}.log",
    benchmark:
        "logs/benchmark/train_tfidf/{task}/{run}/seed{seed}.tsv"
    wildcard_constraints:
        run=one_of(TFIDF_RUNS),
    conda:
        "../envs/train.yaml"
    script:
        "../workflow/scripts/train_tfidf.py"


rule summarize:
    input:
        metrics=expand(
            "results/metrics/{task}/{run}/seed{seed}.json", task=TASKS, run=RUNS, seed=SEEDS
        ),
        hygiene=expand("results/tasks/{task}/hygiene.json", task=TASKS),
        corpus=[CORPUS] if uses_corpus() else [],
    output:
        md=report(
            "results/summary.md", caption="../report/summary.rst", category="Quality and cost"
        ),
        csv="results/summary.csv",
    log:
        "logs/summarize.log",
    benchmark:
        "logs/benchmark/summarize.tsv"
    conda:
        "../envs/train.yaml"
    params:
        tasks=TASKS,
    script:
        "../workflow/scripts/summarize.py"


rule plot_task:
    input:
        metrics=lambda wc: expand(
            f"results/metrics/{wc.task}/{{run}}/seed{{seed}}.json", run=RUNS, seed=SEEDS
        ),
        stages=lambda wc: [
            d
            for run in TLM_RUNS + PLM_RUNS
            for seed in SEEDS
            for d in stage_dirs(wc.task, run, seed)
        ],
    output:
        quality=report(
            "results/plots/{task}/quality_vs_flops.png",
            caption="../report/quality_vs_flops.rst",
            category="Quality and cost",
            subcategory="{task}",
        ),
        curves=report(
            "results/plots/{task}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="{task}",
        ),
        runs=report(
            "results/plots/{task}/runs.png",
            caption="../report/runs.rst",
            category="Quality and cost",
            subcategory="{task}",
        ),
    log:
        "logs/plot_task/{task}.log",
    benchmark:
        "logs/benchmark/plot_task/{task}.tsv"
    conda:
        "../envs/train.yaml"
    script:
        "../workflow/scripts/plot_task.py"


rule retrieval_report:
    input:
        train=task_split("train"),
        queries="results/retrieval/{task}/queries.parquet",
        topk="results/retrieval/{task}/topk.parquet",
        external="results/retrieval/{task}/external.parquet",
        corpus=CORPUS,
    output:
        report(
            "results/report/{task}/retrieval.html",
            caption="../report/retrieval.rst",
            category="Retrieval",
            subcategory="{task}",
        ),
    log:
        "logs/retrieval_report/{task}.log",
    benchmark:
        "logs/benchmark/retrieval_report/{task}.tsv"
    conda:
        "../envs/train.yaml"
    script:
        "../workflow/scripts/retrieval_report.py"
