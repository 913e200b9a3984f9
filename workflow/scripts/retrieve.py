import pandas as pd

from tlm.bm25 import Analyzer, search_shard
from tlm.io import write_parquet
from tlm.smk import run


def main(smk):
    queries = pd.read_parquet(smk.input.queries)
    analyze = Analyzer(**smk.params.analyzer)
    tokens = [analyze(t) for t in queries["text"]]
    hits = search_shard(smk.input.index, tokens, smk.params.top_k, queries["query_id"], threads=smk.threads)
    write_parquet(hits, smk.output[0])


run(main, snakemake)  # noqa: F821
