import logging

from tlm.export import export_best
from tlm.smk import run


def main(smk):
    candidates = {tuple(key): path for key, path in zip(smk.params.models, smk.input)}
    choice = export_best(candidates, smk.output[0])
    logging.getLogger("tlm").info("exported %s", choice)


run(main, snakemake)  # noqa: F821
