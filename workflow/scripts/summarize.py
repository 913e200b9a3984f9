from tlm.evaluate import summarize
from tlm.smk import run


def main(smk):
    summarize(list(smk.input), smk.output.md, smk.output.csv)


run(main, snakemake)  # noqa: F821
