import logging

from tlm.smk import run
from tlm.training.tokenizer import tokenize_texts


def main(smk):
    labels = smk.input.labels if smk.params.with_labels else None
    store = tokenize_texts(
        smk.input.tokenizer,
        smk.input.texts,
        smk.params.max_seq_length,
        smk.output[0],
        labels,
        smk.params.max_rank,
    )
    logging.getLogger("tlm").info("%d texts, %d tokens", len(store), len(store.ids))


run(main, snakemake)  # noqa: F821
