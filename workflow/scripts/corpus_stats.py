import logging

from tlm.retrieval.index import merge_stats
from tlm.smk import run


def main(smk):
    stats = merge_stats(list(smk.input), smk.output[0])
    logging.getLogger("tlm").info("corpus statistics: %s", stats)


run(main, snakemake)  # noqa: F821
