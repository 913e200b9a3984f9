"""`train_stage`: one stage's training loop, in place on a model, with no framework around it.

Each step: draw the step's batch (`stream`), forward and backward over this process's
micro-batches, clip, step the optimizer, count tokens and FLOPs, evaluate on dev every eval_steps
steps (keeping the best weights, stopping early with patience), log a row, save a resumable
checkpoint every save_steps steps.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from tlm.device import amp_dtype, autocast, device_name, pick_device
from tlm.inference import predict_proba
from tlm.io import TLMInputError
from tlm.metrics import classification_metrics, peak_flops, step_flops
from tlm.settings import StageConfig
from tlm.tokens import Batches
from tlm.training.checkpoints import Checkpoints, Progress, TrainResult, resume, snapshot
from tlm.training.ddp import Dist
from tlm.training.plan import lr_lambda, task_loss_weights
from tlm.training.stream import BatchStream, micro_batches, trim

log = logging.getLogger(__name__)

# tokens: real (non-padding) tokens so far; padded_tokens: with the padding the hardware also
# computed; flops: on real tokens; tokens_per_s and mfu: real tokens and their FLOPs per second
# (mfu against the card's dense bf16 peak, where it is known); data_seconds: time spent preparing
# batches (drawing, masking, copying to the device) rather than computing
LOG_COLUMNS = [
    "step",
    "batch",
    "loss",
    "mlm_loss",
    "task_loss",
    "lr",
    "tokens",
    "padded_tokens",
    "flops",
    "seconds",
    "data_seconds",
    "tokens_per_s",
    "mfu",
    "dev_macro_f1",
    "dev_accuracy",
]


@dataclass(frozen=True)
class StageData:
    """What a stage reads: the tokenizer (MLM masking), the task's batches, the external ones (stage
    1 of a run with S) and dev's (None: no evaluation)."""

    tokenizer: object
    task: Batches
    external: Batches | None = None
    dev: Batches | None = None


def train_stage(
    model,
    cfg: StageConfig,
    data: StageData,
    log_csv: Path,
    keep_best: bool = True,
    checkpoints: Checkpoints | None = None,
    d: Dist = Dist(),
    device: torch.device | None = None,
) -> TrainResult:
    """Run one stage in place on `model` (cfg.max_steps steps), evaluating on dev every
    cfg.eval_steps steps and at the end.

    With `keep_best`, the weights with the best dev macro-F1 are restored at the end; with
    cfg.patience, training stops after that many evaluations without a better one. With
    `checkpoints`, training resumes from the newest matching checkpoint (its log included) and
    saves new ones. `device` defaults to GPU `d.rank` where there is a GPU, else the CPU.
    """
    task, external, dev = data.task, data.external, data.dev
    device = device or pick_device(d.rank)
    dtype = amp_dtype(cfg.precision, device)
    peak = peak_flops(device_name(device), dtype is not None)
    model.to(device).train()
    optim = _optimizer(model, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lr_lambda(cfg.warmup_steps or 0, cfg.max_steps)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    gen = torch.Generator().manual_seed(cfg.seed)
    weights = task_loss_weights(cfg.rho2)
    state = checkpoints.newest() if checkpoints else None
    run = (
        resume(state, model, optim, sched, scaler, gen, task, external, device)
        if state is not None
        else None
    )
    run = run or Progress(TrainResult(planned_steps=cfg.max_steps))
    res = run.result

    net = _wrap(model, cfg, d, device)

    Path(log_csv).parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter() - res.seconds
    # written as training goes (tail -f shows it), by the main process only
    with open(log_csv if d.main else os.devnull, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerows([LOG_COLUMNS, *run.rows])
        ahead = cfg.prefetch if cfg.prefetch is not None else (2 if device.type == "cuda" else 0)
        stream = BatchStream(
            task, external, cfg, data.tokenizer, gen, run.step, ahead, pin=device.type == "cuda"
        )
        for step in range(run.step, cfg.max_steps):
            tick = (
                time.perf_counter()
            )  # data_seconds: the step's wait for its batch, and the copy to the device
            on_task, batch, sources = stream.next()
            parts = [
                {k: v.to(device, non_blocking=True) for k, v in trim(batch, r).items()}
                for r in micro_batches(len(batch["input_ids"]), d, cfg.gradient_accumulation_steps)
            ]
            res.data_seconds += time.perf_counter() - tick
            mlm_loss, task_loss = _backward(
                net, parts, batch, on_task, weights, scaler, d, device, dtype
            )
            _optimizer_step(model, optim, sched, scaler, cfg.max_grad_norm)
            _count_step(res, model.config, batch, on_task, d, cfg.gradient_accumulation_steps)
            loss = (
                (weights[1] * task_loss + weights[0] * (mlm_loss or 0.0)) if on_task else mlm_loss
            )
            _check_finite(loss, step + 1)

            last = step + 1 == cfg.max_steps
            scores = None
            if (
                d.main
                and dev is not None
                and (last or (cfg.eval_steps and (step + 1) % cfg.eval_steps == 0))
            ):
                probs = predict_proba(model, dev.epoch(), device, dtype)
                predicted = dev.in_store_order(probs.argmax(-1))
                scores = classification_metrics(
                    dev.store.labels, predicted, model.config.num_labels
                )
                run.evaluated(scores, step + 1, model, keep_best)
                res.stopped_early = bool(
                    cfg.patience and run.since_best >= cfg.patience and not last
                )
            res.seconds = time.perf_counter() - start
            run.rows.append(
                _log_row(
                    step + 1,
                    on_task,
                    (loss, mlm_loss, task_loss),
                    sched.get_last_lr()[0],
                    res,
                    peak,
                    scores,
                )
            )
            writer.writerow(run.rows[-1])
            if d.main and ((step + 1) % 100 == 0 or last or res.stopped_early):
                _log_progress(step + 1, cfg.max_steps, loss, res)
            if _stops_early(step + 1, run, cfg, d, device):
                break
            if (
                checkpoints
                and d.main
                and cfg.save_steps
                and (step + 1) % cfg.save_steps == 0
                and not last
            ):
                checkpoints.save(
                    step + 1, snapshot(step + 1, run, model, optim, sched, scaler, device, sources)
                )
    if run.best_state is not None and res.best_step != res.steps:
        model.load_state_dict(run.best_state)
    return res


def _wrap(model, cfg: StageConfig, d: Dist, device: torch.device):
    """The model as the steps call it: compiled, and in DDP over several processes."""
    net = torch.compile(model, dynamic=True) if cfg.compile else model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    return net


def _optimizer_step(model, optim, sched, scaler, max_grad_norm: float) -> None:
    """Clip the summed gradients, step (the scaler skips a step whose fp16 gradients overflowed), reset."""
    scaler.unscale_(optim)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    scaler.step(optim)
    scaler.update()
    sched.step()
    optim.zero_grad(set_to_none=True)


def _check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise TLMInputError(
            f"the loss is {loss} at step {step}: training diverged. Fix: lower the stage's learning_rate (or raise its warm-up)."
        )


def _stops_early(step: int, run: Progress, cfg: StageConfig, d: Dist, device) -> bool:
    """Whether the stage stops at `step` (patience), the same on every process."""
    res = run.result
    if d.world > 1 and cfg.patience:  # every process stops at the same step
        flag = torch.tensor([res.stopped_early], device=device)
        dist.broadcast(flag, 0)
        res.stopped_early = bool(flag.item())
    if res.stopped_early and d.main:
        log.info(
            "early stop at step %d: no better dev macro-F1 in %d evaluations (best %.4f at step %d)",
            *(step, run.since_best, run.best_f1, res.best_step),
        )
    return res.stopped_early


def _optimizer(model, cfg: StageConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with BERT's betas and eps, no weight decay on biases and LayerNorm weights."""
    params = list(model.parameters())
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=device.type == "cuda",
    )


def _forward(net, part: dict):
    """(task logits, MLM logits or None) of a TLM model, or of a plm run's classifier."""
    kwargs = {"mlm_labels": part["mlm_labels"]} if "mlm_labels" in part else {}
    out = net(input_ids=part["input_ids"], attention_mask=part["attention_mask"], **kwargs)
    return out.logits, getattr(out, "mlm_logits", None)


def _backward(
    net, parts: list[dict], batch: dict, on_task: bool, weights, scaler, d: Dist, device, dtype
):
    """Forward and backward of one step's micro-batches; the whole batch's (mlm_loss, task_loss),
    None where the step has none. Each part's loss is a sum divided by the whole batch's count
    (masked tokens, examples), so the gradient equals the single-process, one-part one."""
    w_mlm, w_task = weights
    mlm_labels = batch.get("mlm_labels")
    n_masked = max(int((mlm_labels != -100).sum()), 1) if mlm_labels is not None else 1
    n_examples = len(batch["input_ids"])
    mlm_sum = task_sum = 0.0
    for i, part in enumerate(parts):
        sync = i == len(parts) - 1
        with nullcontext() if sync or d.world == 1 else net.no_sync(), autocast(device, dtype):
            logits, mlm_logits = _forward(net, part)
            loss = 0.0
            if mlm_labels is not None:
                mlm = F.cross_entropy(
                    mlm_logits.float(),
                    part["mlm_labels"][part["mlm_labels"] != -100],
                    reduction="sum",
                )
                loss = loss + (w_mlm if on_task else 1.0) * mlm / n_masked
                mlm_sum += mlm.item()
            if on_task:
                tl = F.cross_entropy(logits.float(), part["labels"], reduction="sum")
                loss = loss + w_task * tl / n_examples
                task_sum += tl.item()
            # DDP averages gradients over processes; scale so that they add up instead
            scaler.scale(loss * d.world).backward()
    if d.world > 1:  # this process saw only its rows: report the batch's losses
        sums = torch.tensor([mlm_sum, task_sum], device=device)
        dist.all_reduce(sums)
        mlm_sum, task_sum = sums.tolist()
    return (mlm_sum / n_masked if mlm_labels is not None else None), (
        task_sum / n_examples if on_task else None
    )


def _log_row(
    step: int, on_task: bool, losses, lr: float, res: TrainResult, peak, scores: dict | None
) -> list:
    """One row of the training log (LOG_COLUMNS)."""
    loss, mlm_loss, task_loss = losses
    return [
        step,
        "task" if on_task else "external",
        f"{loss:.4f}",
        "" if mlm_loss is None else f"{mlm_loss:.4f}",
        "" if task_loss is None else f"{task_loss:.4f}",
        f"{lr:.3e}",
        res.tokens,
        res.padded_tokens,
        res.flops,
        f"{res.seconds:.3f}",
        f"{res.data_seconds:.3f}",
        f"{res.tokens / res.seconds:.0f}",
        f"{res.flops / res.seconds / peak:.4f}" if peak else "",
        "" if scores is None else scores["macro_f1"],
        "" if scores is None else scores["accuracy"],
    ]


def _log_progress(step: int, steps: int, loss: float, res: TrainResult) -> None:
    log.info(
        "step %d/%d loss %.4f  %.0f tokens/s (real), %.1f%% padding, %.2e FLOPs",
        *(
            step,
            steps,
            loss,
            res.tokens / res.seconds,
            100 * (1 - res.tokens / res.padded_tokens),
            res.flops,
        ),
    )


def _count_step(
    res: TrainResult, config, batch: dict, on_task: bool, d: Dist, accumulation: int
) -> None:
    """Add one step's tokens and FLOPs to `res`: on real tokens, and as computed (each process's
    micro-batches padded to their own width)."""
    lengths = batch["attention_mask"].sum(1).numpy()
    masked = (
        (batch["mlm_labels"] != -100).sum(1).numpy()
        if "mlm_labels" in batch
        else np.zeros(len(lengths), np.int64)
    )
    res.steps += 1
    res.task_steps += on_task
    res.external_steps += not on_task
    res.tokens += int(lengths.sum())
    res.flops += step_flops(config, lengths, int(masked.sum()), task_head=on_task)
    for k in range(d.world):
        for r in micro_batches(len(lengths), Dist(k, d.world), accumulation):
            width = int(lengths[r].max())
            res.padded_tokens += width * len(r)
            res.padded_flops += step_flops(
                config, [width] * len(r), int(masked[r].sum()), task_head=on_task
            )
