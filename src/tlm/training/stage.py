"""One stage of one run, as the rules call it: its data, its model (from scratch, from stage 1, or
from a pretrained checkpoint), its plan, the loop, and its checkpoint; over several processes
with DDP."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from tlm.config import pretrained_dir
from tlm.device import amp_dtype, pick_device
from tlm.io import TLMInputError
from tlm.model import PretrainedTLM, TLMModel, checkpoint_error, label_maps, load_classifier, make_config, reset_head
from tlm.tokens import Batches, TokenStore
from tlm.training.checkpoints import Checkpoints, fingerprint, save_checkpoint
from tlm.training.ddp import Dist, check_gpu, launch
from tlm.training.loop import train_stage
from tlm.training.plan import plan_stage, stage_config
from tlm.training.tokenizer import load_tokenizer

log = logging.getLogger(__name__)


def run_stage(
    stage: str,
    settings: dict,
    tokenizer_dir,
    tokens_dir,
    external_dir,
    init_dir,
    labels: list[str],
    out_dir,
    log_csv,
    world: int = 1,
    gpus_requested: int = 0,
    backend: str | None = None,
) -> None:
    """Train stage 1 (from scratch, or from settings["pretrained"]) or stage 2 (from `init_dir`; a
    plm run: from settings["pretrained"]) of one run and save its checkpoint.

    `settings` is tlm.config.run_settings() (model, stage1/stage2, trainer, seed); `tokens_dir`
    holds the tokenized task splits, `external_dir` (or None) the tokenized external data; `labels`
    are the task's label names (the model's id2label). With world > 1, `world` data-parallel
    processes are started on this machine (one per GPU; gloo on CPU). `gpus_requested`: the GPUs
    the job asked for; none found is a warning, or an error with trainer.require_gpu.
    """
    device = check_gpu(gpus_requested, settings.get("trainer", {}).get("require_gpu", False))
    args = (stage, settings, tokenizer_dir, tokens_dir, external_dir, init_dir, labels, out_dir, log_csv, device)
    launch(_run_stage, world, backend, *args)


def _run_stage(
    d: Dist, stage, settings, tokenizer_dir, tokens_dir, external_dir, init_dir, labels, out_dir, log_csv, device
) -> None:
    seed = settings["seed"]
    torch.manual_seed(seed)
    cfg = stage_config(stage, settings)
    if cfg.batch_size < d.world * cfg.gradient_accumulation_steps:
        raise TLMInputError(
            f"{stage}.batch_size {cfg.batch_size} is smaller than {d.world} processes x "
            f"{cfg.gradient_accumulation_steps} gradient_accumulation_steps. Fix: raise batch_size or lower the others."
        )
    max_len = settings["model"]["max_seq_length"]
    tokens_dir = Path(tokens_dir)
    train = TokenStore.load(tokens_dir / "train")
    external_store = TokenStore.load(external_dir) if stage == "stage1" and external_dir else None
    model, tokenizer, extra = _start_model(stage, settings, tokenizer_dir, init_dir, labels)
    tokenizer.model_max_length = max_len  # what the saved model was trained on: pipeline(truncation=True) cuts there
    cfg = plan_stage(cfg, train, external_store, model.config, max_len)
    multiple = cfg.pad_to_multiple_of or (8 if cfg.compile else 1)  # few shapes: compile does not recompile per width
    special = dict(pad_id=tokenizer.pad_token_id, max_len=max_len, sep_id=tokenizer.sep_token_id, pad_multiple=multiple)
    # Task batches are not length-bucketed: text length correlates with the label (a batch of only
    # short texts is a batch of a few classes), which slows and biases the task loss.
    task = Batches(train, cfg.batch_size, seed=seed, **special)
    dev = Batches(TokenStore.load(tokens_dir / "dev"), 256, seed=seed, shuffle=False, **special)
    external = (
        None
        if external_store is None
        else Batches(external_store, cfg.batch_size, seed=seed + 1, bucket=50, pack=cfg.pack_external, **special)
    )
    if d.main:
        log.info(
            "%s: %d task examples, %d external documents, %d processes, %s",
            *(stage, len(train), 0 if external is None else len(external.store), d.world, cfg),
        )
    checkpoints = Checkpoints(f"{out_dir}.checkpoints", fingerprint([stage, settings, d.world]), cfg.save_total_limit)
    result = train_stage(
        model, cfg, tokenizer, task, external, dev, Path(log_csv), keep_best=stage == "stage2", checkpoints=checkpoints, d=d
    )
    if d.main:
        final = model.classifier_model() if stage == "stage2" and isinstance(model, TLMModel) else model
        record = {
            "stage": stage,
            "settings": settings,
            "plan": asdict(cfg),
            "processes": d.world,
            "device": device,
            "low_precision": amp_dtype(cfg.precision, pick_device(d.rank)) is not None,
            "train_examples": len(train),
            **extra,
        }
        save_checkpoint(final, tokenizer, result, out_dir, Path(log_csv), record)
        checkpoints.clear()


def _start_model(stage: str, settings: dict, tokenizer_dir, init_dir, labels: list[str]):
    """(model, tokenizer, what the stage's record adds) a stage starts from: a pretrained checkpoint
    (a tlm run's stage 1 with `pretrained`, a plm run), a new model of the preset (stage 1), or
    stage 1's model with a fresh task head (stage 2)."""
    extra = {}
    max_len = settings["model"]["max_seq_length"]
    if settings.get("pretrained") and init_dir is None:  # stage 1 of a tlm run, or a plm run, from the checkpoint
        ckpt = pretrained_dir(settings["pretrained"])
        tokenizer = load_tokenizer(ckpt)
        if stage == "stage1":
            model = PretrainedTLM(ckpt, labels)
            extra["mlm_head"] = "new" if model.new_mlm_head else "checkpoint"
            log.info("stage 1 from %s, with %s MLM head", ckpt, "a new" if model.new_mlm_head else "the checkpoint's")
        else:  # the plm baseline: the checkpoint with its architecture's classification head
            model = load_classifier(ckpt, **label_maps(labels))
        if not all(hasattr(model.config, a) for a in ("num_hidden_layers", "hidden_size", "intermediate_size")):
            raise TLMInputError(
                f"{settings['pretrained']}: not a BERT-style encoder config, so its FLOPs cannot be counted. "
                "Fix: use a BERT-style checkpoint (num_hidden_layers, hidden_size, intermediate_size)."
            )
    elif init_dir is None:
        tokenizer = load_tokenizer(tokenizer_dir)
        m = settings["model"]
        model = TLMModel(make_config(m["preset"], len(tokenizer), labels, max_len, tokenizer.pad_token_id, m.get("dropout", 0.1)))
    elif settings.get("pretrained"):  # stage 2 after a stage 1 from a checkpoint: its classifier, a fresh head
        tokenizer = load_tokenizer(init_dir)
        model = load_classifier(init_dir, **label_maps(labels))
        reset_head(model)
    else:
        tokenizer = load_tokenizer(init_dir)
        try:
            model = TLMModel.from_pretrained(init_dir)
        except OSError as e:
            raise checkpoint_error(init_dir, e) from None
        model.reset_classifier()  # the reference code starts stage 2 with a fresh task head
    return model, tokenizer, extra
