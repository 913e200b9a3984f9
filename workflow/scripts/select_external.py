import logging

import pandas as pd

from tlm.select import select_external
from tlm.smk import run


def main(smk):
    docs = select_external(pd.read_parquet(smk.input.topk), smk.input.corpus, smk.output[0])
    logging.getLogger("tlm").info("|S| = %d documents, %d bytes", len(docs), docs["text"].str.len().sum())


run(main, snakemake)  # noqa: F821
