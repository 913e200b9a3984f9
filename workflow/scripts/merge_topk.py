import pandas as pd

from tlm.bm25 import merge_topk
from tlm.io import write_parquet
from tlm.smk import run


def main(smk):
    write_parquet(merge_topk([pd.read_parquet(p) for p in smk.input], smk.params.top_k), smk.output[0])


run(main, snakemake)  # noqa: F821
