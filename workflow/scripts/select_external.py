import logging

import pandas as pd

from tlm.select import external_size, select_external
from tlm.smk import run


def main(smk):
    select_external(pd.read_parquet(smk.input.topk), smk.input.corpus, smk.output[0])
    logging.getLogger("tlm").info("|S| = %d documents, %d bytes", *external_size([smk.output[0]]))


run(main, snakemake)  # noqa: F821
