import pandas as pd

from tlm.retrieval.encoder import embed_queries
from tlm.smk import run


def main(smk):
    texts = pd.read_parquet(smk.input[0], columns=["text"])["text"].tolist()
    embed_queries(texts, smk.output.npy, smk.params.encoder, smk.config["dense"]["batch_size"])


run(main, snakemake)  # noqa: F821
