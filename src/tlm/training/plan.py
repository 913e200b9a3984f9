"""A stage's schedule (task or external batch, loss weights, learning
rate) and its budget resolved to steps (`plan_stage`)."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from tlm.config import DEFAULT_BUDGET
from tlm.io import TLMInputError
from tlm.metrics import training_flops
from tlm.settings import StageConfig
from tlm.tokens import TokenStore

log = logging.getLogger(__name__)


def is_task_step(step: int, rho1: int, has_external: bool) -> bool:
    """Step `step` (0-based) draws a task batch: the first of every rho1 + 1 steps."""
    return not has_external or step % (rho1 + 1) == 0


def task_loss_weights(rho2: float) -> tuple[float, float]:
    """(weight of L_mlm, weight of L_task) on a task batch: (rho2, 1) / (rho2 + 1)."""
    return rho2 / (rho2 + 1), 1 / (rho2 + 1)


def lr_lambda(warmup: int, total: int):
    """Linear warm-up then linear decay to zero (BERT's schedule)."""
    return lambda step: (
        (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))
    )


def expected_step_flops(
    config, store: TokenStore, cfg: StageConfig, max_len: int, on_task: bool
) -> float:
    """Mean training FLOPs (real tokens) of one step of batch_size rows drawn from `store`."""
    lengths = np.minimum(store.lengths, max_len).astype(np.float64)
    n = cfg.batch_size
    masked = (
        cfg.mlm_probability * n * max(lengths.mean() - 2, 0) if not on_task or cfg.rho2 > 0 else 0
    )  # [CLS], [SEP] never
    return training_flops(
        config, n * lengths.mean(), n * (lengths**2).mean(), masked, n if on_task else 0
    )


def plan_stage(
    cfg: StageConfig, train: TokenStore, external: TokenStore | None, config, max_len: int
) -> StageConfig:
    """`cfg` with its budget resolved to steps: max_steps, warmup_steps and eval_steps set.

    epochs: passes over the training set by the task batches (stage 1 adds rho1 external steps to
    each), and at least min_steps steps: a small task still gets a model that trains; flops: the
    steps whose expected FLOPs on real tokens (from the data's length distribution, so the same on
    every machine) add up to the budget. rho1 None: the external batches per task batch that make
    stage 1 go `external_epochs` times over S while it goes `epochs` times over T (at least 1, at
    most 999: the paper's large rho1 for small tasks and large S, 1 for large tasks); a floor that
    lengthens the stage lengthens both. eval_steps None: ten dev evaluations a stage, whatever |T|.
    """
    epochs = cfg.epochs or DEFAULT_BUDGET["stage1"]["epochs"]
    if cfg.rho1 is None:
        rho1 = (
            round(cfg.external_epochs * len(external) / (epochs * len(train)))
            if external is not None
            else 0
        )
        cfg = dataclasses.replace(cfg, rho1=min(max(rho1, 1), 999) if external is not None else 0)
    cycle = cfg.rho1 + 1 if external is not None else 1
    per_epoch = math.ceil(len(train) / cfg.batch_size)  # task batches per pass
    if cfg.batch_size > len(train):
        log.warning(
            "batch_size %d is more than the %d training examples: each task batch holds them all (a smaller "
            "batch than configured). Fix: lower the stage's batch_size to at most %d",
            cfg.batch_size,
            len(train),
            len(train),
        )
    if cfg.max_steps:
        steps = cfg.max_steps
    elif cfg.epochs:
        steps = max(math.ceil(cfg.epochs * per_epoch) * cycle, cfg.min_steps)
    elif cfg.flops:
        per_cycle = expected_step_flops(config, train, cfg, max_len, on_task=True)
        if external is not None:
            per_cycle += cfg.rho1 * expected_step_flops(
                config, external, cfg, max_len, on_task=False
            )
        if cfg.flops < per_cycle:
            log.warning(
                "flops = %.3g is less than one step's %.3g (a task batch and its rho1 external ones): training that one "
                "step. Fix: raise the stage's flops (or give max_steps or epochs)",
                cfg.flops,
                per_cycle,
            )
        steps = max(1, math.floor(cfg.flops / per_cycle)) * cycle
    else:
        raise TLMInputError(
            "no training budget: set one of max_steps, epochs or flops for the stage."
        )
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_ratio * steps)
    every = cfg.eval_steps if cfg.eval_steps is not None else math.ceil(steps / 10)
    return dataclasses.replace(
        cfg, max_steps=steps, warmup_steps=min(warmup, steps), eval_steps=every
    )
