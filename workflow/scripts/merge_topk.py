import logging
from pathlib import Path

import pyarrow.parquet as pq

from tlm.io import read_json
from tlm.retrieval.merge import merge_topk_files, retrieval_warnings
from tlm.smk import run


def main(smk):
    n_queries = pq.read_metadata(smk.input.queries).num_rows
    answered = merge_topk_files(list(smk.input.hits), smk.params.top_k, n_queries, smk.output[0])
    num_docs = read_json(Path(smk.input.stats) / "stats.json")["num_docs"]
    for warning in retrieval_warnings(
        smk.wildcards.task, answered, n_queries, smk.params.top_k, num_docs, smk.params.analyzer
    ):
        logging.getLogger("tlm").warning("%s", warning)


run(main, snakemake)  # noqa: F821
