from tlm.retrieval.analyzer import Analyzer
from tlm.retrieval.index import count_terms
from tlm.smk import run


def main(smk):
    count_terms(smk.input[0], Analyzer(**smk.params.analyzer), smk.output[0], processes=smk.threads)


run(main, snakemake)  # noqa: F821
