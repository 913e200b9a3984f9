import pyarrow.parquet as pq

from tlm.evaluate import model_flag
from tlm.export import package_model, workflow_version
from tlm.io import read_json
from tlm.smk import run


def main(smk):
    info = dict(smk.params.info)
    info["task"] = {
        **info["task"],
        **{s: pq.read_metadata(smk.input[s]).num_rows for s in ("train", "dev", "test")},
    }
    if smk.input.corpus:
        info["corpus"] = {
            **info["corpus"],
            "documents": read_json(smk.input.corpus[0])["documents"],
        }
    info["version"] = workflow_version()
    info["flag"] = model_flag(smk.input.metrics, smk.input.baselines)
    package_model(list(smk.input.stages), read_json(smk.input.metrics), info, smk.output[0])


run(main, snakemake)  # noqa: F821
