import pyarrow.parquet as pq

from tlm.select import select_random
from tlm.smk import run


def main(smk):
    select_random(pq.read_metadata(smk.input.external).num_rows, smk.input.corpus, smk.output[0], smk.params.seed)


run(main, snakemake)  # noqa: F821
