from pathlib import Path

from tlm.io import read_json
from tlm.smk import run
from tlm.training.ddp import data_parallel_processes
from tlm.training.stage import run_stage


def main(smk):
    # train_stage1, train_stage2, or finetune_plm (a pretrained encoder's stage 2)
    stage = "stage2" if smk.rule == "finetune_plm" else smk.rule.removeprefix("train_")
    tokens_dir = Path(smk.input.tokens[0]).parent
    init = getattr(smk.input, "stage1", None)
    external = smk.input.external[0] if stage == "stage1" and smk.input.external else None
    labels = read_json(smk.input.labels)["labels"]
    gpus = smk.resources.gpu
    run_stage(
        stage,
        smk.params.settings,
        smk.input.tokenizer,
        tokens_dir,
        external,
        init,
        labels,
        smk.output[0],
        smk.log.csv,
        world=data_parallel_processes(gpus),
        gpus_requested=gpus,
    )


run(main, snakemake)  # noqa: F821
