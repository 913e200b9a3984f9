import logging
from tlm.evaluate import evaluate_run
from tlm.io import write_json
from tlm.smk import run


def main(smk):
    metrics = evaluate_run(smk.input.stage1, smk.input.stage2, smk.input.tokens, list(smk.input.external), smk.params.precision)
    logging.getLogger("tlm").info("%s", metrics)
    write_json(metrics, smk.output[0])


run(main, snakemake)  # noqa: F821
