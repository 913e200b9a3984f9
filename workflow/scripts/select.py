import logging

from tlm.retrievers import by_rule
from tlm.smk import run


def main(smk):
    retriever = by_rule(smk.rule)
    docs, nbytes = retriever.select(smk.input, smk.output[0], smk.params)
    logging.getLogger("tlm").info("%s: |S| = %d documents, %d bytes", retriever.name, docs, nbytes)


run(main, snakemake)  # noqa: F821
