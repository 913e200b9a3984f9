from tlm.data import SPLITS, load_task
from tlm.io import write_json, write_parquet
from tlm.smk import run


def main(smk):
    splits, labels = load_task({s: smk.input[s] for s in SPLITS}, smk.params.text_column, smk.params.label_column)
    for split, df in splits.items():
        write_parquet(df, smk.output[split])
    write_json({"labels": labels}, smk.output.labels)


run(main, snakemake)  # noqa: F821
