from tlm.evaluate import summarize
from tlm.smk import run


def main(smk):
    hygiene = dict(zip(smk.params.tasks, smk.input.hygiene))
    summarize(
        list(smk.input.metrics),
        smk.output.md,
        smk.output.csv,
        hygiene,
        smk.input.corpus[0] if smk.input.corpus else None,
    )


run(main, snakemake)  # noqa: F821
