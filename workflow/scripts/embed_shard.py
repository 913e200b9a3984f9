from tlm.io import read_json
from tlm.retrieval.encoder import embed_shard
from tlm.smk import run


def main(smk):
    dense = smk.config["dense"]  # batch size and time budget: no params, they change no vector
    embed_shard(
        smk.input.shard,
        smk.output[0],
        {**smk.params.encoder, "max_hours": dense["max_hours"]},
        read_json(smk.input.corpus)["documents"],
        dense["batch_size"],
    )


run(main, snakemake)  # noqa: F821
