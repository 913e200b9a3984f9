from tlm.retrieval.analyzer import Analyzer
from tlm.retrieval.search import retrieve_shard
from tlm.smk import run


def main(smk):
    analyzer = Analyzer(**smk.params.analyzer)
    retrieve_shard(
        smk.input.index,
        smk.input.queries,
        smk.params.top_k,
        smk.output[0],
        analyzer,
        threads=smk.threads,
    )


run(main, snakemake)  # noqa: F821
