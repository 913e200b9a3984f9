from tlm.bm25 import Analyzer
from tlm.retrieval import retrieve_shard
from tlm.smk import run


def main(smk):
    tasks = list(zip(smk.input.queries, smk.params.top_k, smk.output))
    retrieve_shard(smk.input.index, tasks, Analyzer(**smk.params.analyzer), threads=smk.threads)


run(main, snakemake)  # noqa: F821
