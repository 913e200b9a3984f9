import logging
from pathlib import Path

from tlm.baselines import tfidf_baseline
from tlm.io import write_json
from tlm.smk import run


def main(smk):
    metrics = tfidf_baseline(Path(smk.input[0]).parent, int(smk.wildcards.seed))
    logging.getLogger("tlm").info("%s", metrics)
    write_json(metrics, smk.output[0])


run(main, snakemake)  # noqa: F821
