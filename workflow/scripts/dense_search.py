from tlm.retrieval.dense import search_shard
from tlm.smk import run


def main(smk):
    search_shard(smk.input.shard, smk.input.queries, smk.params.top_k, smk.output[0])


run(main, snakemake)  # noqa: F821
