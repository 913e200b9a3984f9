import logging

from tlm.retrieval.dense import write_manifest
from tlm.smk import run


def main(smk):
    manifest = write_manifest(list(smk.input), smk.output[0])
    logging.getLogger("tlm").info(
        "%d documents, %d dims (%s): %d bytes",
        manifest["documents"],
        manifest["dim"],
        manifest["dtype"],
        manifest["bytes"],
    )


run(main, snakemake)  # noqa: F821
