import logging
from pathlib import Path

from tlm.evaluate import evaluate_run
from tlm.io import write_json
from tlm.smk import run


def main(smk):
    metrics = evaluate_run(smk.input.stage1, smk.input.stage2, Path(smk.input.task[0]).parent, list(smk.input.external))
    logging.getLogger("tlm").info("%s", metrics)
    write_json(metrics, smk.output[0])


run(main, snakemake)  # noqa: F821
