from tlm.corpus import shard_part
from tlm.smk import run


def main(smk):
    p = smk.params
    shard_part(
        list(smk.input),
        smk.output[0],
        p.text_field,
        p.dedup,
        p.min_chars,
        p.max_doc_chars,
        p.long_docs,
        p.max_bad_share,
    )


run(main, snakemake)  # noqa: F821
