import logging

from tlm.report import retrieval_report
from tlm.smk import run


def main(smk):
    i = smk.input
    stats = retrieval_report(
        smk.wildcards.task,
        i.train,
        i.queries,
        i.topk,
        i.external,
        i.corpus,
        smk.output[0],
    )
    logging.getLogger("tlm").info("%s", stats)


run(main, snakemake)  # noqa: F821
