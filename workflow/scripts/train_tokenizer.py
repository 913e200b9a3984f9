import logging

import pandas as pd

from tlm.smk import run
from tlm.training.tokenizer import load_tokenizer, train_tokenizer


def main(smk):
    cfg = smk.params.tokenizer
    if cfg["path"]:  # a user's local tokenizer: check it and copy it into the results
        load_tokenizer(cfg["path"]).save_pretrained(smk.output[0])
        return
    texts = pd.concat(
        [
            pd.read_parquet(smk.input.train, columns=["text"]),
            pd.read_parquet(smk.input.external, columns=["text"]),
        ]
    )
    tok = train_tokenizer(texts["text"], cfg["vocab_size"], cfg["min_frequency"], smk.output[0])
    logging.getLogger("tlm").info(
        "WordPiece vocabulary of %d entries from %d texts", len(tok), len(texts)
    )


run(main, snakemake)  # noqa: F821
