from pathlib import Path

from tlm.smk import run
from tlm.train import run_stage


def main(smk):
    task_dir = Path(smk.input.task[0]).parent
    run_stage("stage2", smk.params.settings, smk.input.stage1, task_dir, [], smk.input.stage1, smk.output[0], smk.log.csv)


run(main, snakemake)  # noqa: F821
