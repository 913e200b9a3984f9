import pyarrow.parquet as pq

from tlm.retrieval import merge_topk_files
from tlm.smk import run


def main(smk):
    merge_topk_files(list(smk.input.hits), smk.params.top_k, pq.read_metadata(smk.input.queries).num_rows, smk.output[0])


run(main, snakemake)  # noqa: F821
