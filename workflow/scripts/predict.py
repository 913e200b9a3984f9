import logging

from tlm.predict import predict_files
from tlm.smk import run


def main(smk):
    n = predict_files(
        smk.input.model,
        list(smk.input.files),
        smk.params.text_column,
        smk.output[0],
        precision=smk.params.precision,
    )
    logging.getLogger("tlm").info("%d texts predicted", n)


run(main, snakemake)  # noqa: F821
