from pathlib import Path

from tlm.smk import run
from tlm.train import run_stage


def main(smk):
    task_dir = Path(smk.input.task[0]).parent
    run_stage("stage1", smk.params.settings, smk.input.tokenizer, task_dir, list(smk.input.external), None, smk.output[0], smk.log.csv)


run(main, snakemake)  # noqa: F821
