import logging

from tlm.data import SPLITS, hygiene_notes, load_task
from tlm.io import write_json, write_parquet
from tlm.smk import run


def main(smk):
    splits, labels, report = load_task(
        {s: smk.input[s] for s in SPLITS}, smk.params.text_column, smk.params.label_column
    )
    for split, df in splits.items():
        write_parquet(df, smk.output[split])
    write_json({"labels": labels}, smk.output.labels)
    write_json(report, smk.output.hygiene)
    for note in hygiene_notes(smk.wildcards.task, report):
        logging.getLogger("tlm").warning("%s", note)


run(main, snakemake)  # noqa: F821
