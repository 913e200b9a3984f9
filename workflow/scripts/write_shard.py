from tlm.corpus import write_shard
from tlm.smk import run


def main(smk):
    write_shard(smk.input.part, smk.input.dropped, smk.params.plan, smk.output[0])


run(main, snakemake)  # noqa: F821
