import logging

import numpy as np

from tlm.retrieval.merge import merge_topk_files
from tlm.smk import run


def main(smk):
    n_queries = len(np.load(smk.input.queries, mmap_mode="r"))
    merge_topk_files(list(smk.input.hits), smk.params.top_k, n_queries, smk.output[0])
    logging.getLogger("tlm").info("top-%d of %d queries merged", smk.params.top_k, n_queries)


run(main, snakemake)  # noqa: F821
