import logging

from tlm.select import select_external
from tlm.smk import run


def main(smk):
    docs, nbytes = select_external(smk.input.topk, smk.input.corpus, smk.output[0])
    logging.getLogger("tlm").info("|S| = %d documents, %d bytes", docs, nbytes)


run(main, snakemake)  # noqa: F821
