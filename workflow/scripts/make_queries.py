import pandas as pd

from tlm.io import write_parquet
from tlm.keywords import make_query
from tlm.smk import run


def main(smk):
    texts = pd.read_parquet(smk.input[0])["text"]
    queries = [make_query(t, smk.params.mode, smk.params.num_keywords) for t in texts]
    write_parquet(
        pd.DataFrame({"query_id": range(len(queries)), "text": queries}).astype(
            {"query_id": "int64"}
        ),
        smk.output[0],
    )


run(main, snakemake)  # noqa: F821
