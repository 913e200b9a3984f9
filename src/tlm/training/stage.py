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
from tlm.model import (
    PretrainedTLM,
    TLMModel,
    checkpoint_error,
    label_maps,
    load_classifier,
    make_config,
    reset_head,
)
from tlm.settings import StageSettings
from tlm.tokens import EVAL_BUCKET, TRAIN_BUCKET, Batches, TokenStore
from tlm.training.checkpoints import Checkpoints, fingerprint, save_checkpoint
from tlm.training.ddp import Dist, check_gpu, launch
from tlm.training.loop import StageData, train_stage
from tlm.training.plan import plan_stage
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
    s = StageSettings.from_params(
        stage, settings
    )  # typed once; the rule's params stay as they came
    device = check_gpu(gpus_requested, s.train.require_gpu)
    args = (s, tokenizer_dir, tokens_dir, external_dir, init_dir, labels, out_dir, log_csv, device)
    launch(_run_stage, world, backend, *args)


def _run_stage(
    d: Dist,
    s: StageSettings,
    tokenizer_dir,
    tokens_dir,
    external_dir,
    init_dir,
    labels,
    out_dir,
    log_csv,
    device,
) -> None:
    stage, seed, cfg = s.stage, s.seed, s.train
    torch.manual_seed(seed)
    if cfg.batch_size < d.world * cfg.gradient_accumulation_steps:
        raise TLMInputError(
            f"{stage}.batch_size {cfg.batch_size} is smaller than {d.world} processes x "
            f"{cfg.gradient_accumulation_steps} gradient_accumulation_steps. Fix: raise batch_size or lower the others."
        )
    max_len = s.model.max_seq_length
    tokens_dir = Path(tokens_dir)
    train = TokenStore.load(tokens_dir / "train")
    external_store = TokenStore.load(external_dir) if stage == "stage1" and external_dir else None
    model, tokenizer, extra = _start_model(s, tokenizer_dir, init_dir, labels)
    tokenizer.model_max_length = (
        max_len  # what the saved model was trained on: pipeline(truncation=True) cuts there
    )
    cfg = plan_stage(cfg, train, external_store, model.config, max_len)
    multiple = cfg.pad_to_multiple_of or (
        8 if cfg.compile else 1
    )  # few shapes: compile does not recompile per width
    special = dict(
        pad_id=tokenizer.pad_token_id,
        max_len=max_len,
        sep_id=tokenizer.sep_token_id,
        pad_multiple=multiple,
    )
    # Task batches are length-bucketed within each label (tlm.tokens.Batches), dev by length alone.
    task = Batches(train, cfg.batch_size, seed=seed, bucket=TRAIN_BUCKET, **special)
    dev = Batches(
        TokenStore.load(tokens_dir / "dev"),
        256,
        seed=seed,
        shuffle=False,
        bucket=EVAL_BUCKET,
        **special,
    )
    external = (
        None
        if external_store is None
        else Batches(
            external_store,
            cfg.batch_size,
            seed=seed + 1,
            bucket=TRAIN_BUCKET,
            pack=cfg.pack_external,
            **special,
        )
    )
    if d.main:
        log.info(
            "%s: %d task examples, %d external documents, %d processes, %s",
            *(stage, len(train), 0 if external is None else len(external.store), d.world, cfg),
        )
    checkpoints = Checkpoints(
        f"{out_dir}.checkpoints", fingerprint([stage, s.params, d.world]), cfg.save_total_limit
    )
    data = StageData(tokenizer, task, external, dev)
    result = train_stage(
        model, cfg, data, Path(log_csv), keep_best=stage == "stage2", checkpoints=checkpoints, d=d
    )
    if d.main:
        final = (
            model.classifier_model() if stage == "stage2" and isinstance(model, TLMModel) else model
        )
        record = {
            "stage": stage,
            "settings": s.params,
            "plan": asdict(cfg),
            "processes": d.world,
            "device": device,
            "low_precision": amp_dtype(cfg.precision, pick_device(d.rank)) is not None,
            "train_examples": len(train),
            **extra,
        }
        save_checkpoint(final, tokenizer, result, out_dir, Path(log_csv), record)
        checkpoints.clear()


def _start_model(s: StageSettings, tokenizer_dir, init_dir, labels: list[str]):
    """(model, tokenizer, what the stage's record adds) a stage starts from: a pretrained checkpoint
    (a tlm run's stage 1 with `pretrained`, a plm run), a new model of the preset (stage 1), or
    stage 1's model with a fresh task head (stage 2)."""
    extra = {}
    if s.pretrained and init_dir is None:  # stage 1 of a tlm run, or a plm run, from the checkpoint
        ckpt = pretrained_dir(s.pretrained)
        tokenizer = load_tokenizer(ckpt)
        if s.stage == "stage1":
            model = PretrainedTLM(ckpt, labels)
            extra["mlm_head"] = "new" if model.new_mlm_head else "checkpoint"
            log.info(
                "stage 1 from %s, with %s MLM head",
                ckpt,
                "a new" if model.new_mlm_head else "the checkpoint's",
            )
        else:  # the plm baseline: the checkpoint with its architecture's classification head
            model = load_classifier(ckpt, **label_maps(labels))
        if not all(
            hasattr(model.config, a)
            for a in ("num_hidden_layers", "hidden_size", "intermediate_size")
        ):
            raise TLMInputError(
                f"{s.pretrained}: not a BERT-style encoder config, so its FLOPs cannot be counted. "
                "Fix: use a BERT-style checkpoint (num_hidden_layers, hidden_size, intermediate_size)."
            )
    elif init_dir is None:
        tokenizer = load_tokenizer(tokenizer_dir)
        m = s.model
        model = TLMModel(
            make_config(
                m.preset,
                len(tokenizer),
                labels,
                m.max_seq_length,
                tokenizer.pad_token_id,
                m.dropout,
            )
        )
    elif s.pretrained:  # stage 2 after a stage 1 from a checkpoint: its classifier, a fresh head
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
