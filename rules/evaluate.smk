# Evaluation on the test split, with the cost of each run beside its quality, and the summary table.


rule evaluate:
    input:
        stage1="results/models/{task}/{run}/stage1",
        stage2="results/models/{task}/{run}/stage2",
        tokens="results/models/{task}/tokens/test",
        external=external_data,
    output:
        "results/metrics/{task}/{run}.json",
    params:
        precision=config["trainer"]["precision"],
    threads: config["resources"]["train_threads"]
    resources:
        gpu=min(config["resources"]["gpu"], 1),
    log:
        "logs/evaluate/{task}/{run}.log",
    conda:
        "../envs/train.yaml"
    script:
        "../workflow/scripts/evaluate.py"


rule summarize:
    input:
        expand("results/metrics/{task}/{run}.json", task=TASKS, run=RUNS),
    output:
        md="results/summary.md",
        csv="results/summary.csv",
    log:
        "logs/summarize.log",
    conda:
        "../envs/train.yaml"
    script:
        "../workflow/scripts/summarize.py"
