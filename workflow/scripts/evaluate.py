import logging

from tlm.evaluate import evaluate_run
from tlm.io import write_json
from tlm.smk import run


def main(smk):
    metrics = evaluate_run(
        list(smk.input.stages),
        smk.input.tokens,
        list(smk.input.external),
        smk.params.precision,
        smk.params.max_rank,
        predictions_path=smk.output.predictions,
    )
    if smk.params.pretraining:
        metrics["pretraining"] = smk.params.pretraining
    logging.getLogger("tlm").info("%s", metrics)
    write_json(metrics, smk.output.metrics)


run(main, snakemake)  # noqa: F821
