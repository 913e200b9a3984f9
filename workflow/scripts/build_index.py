from tlm.retrieval.index import build_shard_index
from tlm.smk import run


def main(smk):
    build_shard_index(
        smk.input.counts, smk.input.stats, smk.output[0], k1=smk.params.k1, b=smk.params.b
    )


run(main, snakemake)  # noqa: F821
