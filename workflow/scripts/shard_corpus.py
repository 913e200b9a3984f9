from tlm.corpus import assign_ids
from tlm.smk import run


def main(smk):
    parts = dict(zip(smk.params.parts, smk.input, strict=True))
    assign_ids(
        parts, smk.output.manifest, smk.output.dropped, smk.params.shard_size, smk.params.dedup
    )


run(main, snakemake)  # noqa: F821
