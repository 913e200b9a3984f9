"""Tokenizer training, the two TLM training stages and prediction.

Stage 1 (joint): every step draws ONE batch. Of every rho1 + 1 steps, one is a task batch and
rho1 are external batches (the reference code's schedule). An external batch's loss is its MLM
loss; a task batch's is (rho2 * L_mlm + L_task) / (rho2 + 1), computed on the masked task text.
Stage 2 (rho1 = rho2 = 0): the task loss alone, with a fresh classification head; the checkpoint
with the best dev macro-F1 is kept (checkpoints are picked on dev, never on test), and with
`patience` the stage stops once that many evaluations in a row did not beat it.

A stage's budget is `max_steps`, or `epochs` over the task's training set (in stage 1 counted by
its task batches, each with its rho1 external ones), or `flops`, training FLOPs on real tokens
(converted to steps from the data's lengths before training, so the schedule is the same on any
machine). `plan_stage` resolves it, with the warm-up and evaluation interval, to steps.

One step's batch is the same whatever the hardware: it is drawn and masked identically on every
process, then split over `world` DDP processes and `gradient_accumulation_steps` micro-batches.
Each part's loss is a sum divided by the whole batch's count (masked tokens, examples), so the
gradient equals the single-process one and the schedule does not depend on the GPU count.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import queue
import shutil
import socket
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tlm.config import DEFAULT_BUDGET, pretrained_dir
from tlm.data import Batches, TokenStore, mask_tokens
from tlm.io import TLMInputError, atomic_path, read_json, write_json
from tlm.metrics import classification_metrics, peak_flops, step_flops, training_flops
from tlm.model import PretrainedTLM, TLMModel, checkpoint_error, label_maps, load_classifier, make_config, reset_head
from tlm.wordpiece import learn_vocab, word_counts

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
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


def train_tokenizer(texts, vocab_size: int, min_frequency: int, out_dir) -> PreTrainedTokenizerFast:
    """A lowercased BERT-style WordPiece vocabulary learned from the task and external texts, the
    same in every process (tlm.wordpiece), with canonical ids: specials first, then sorted."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = list(SPECIAL_TOKENS.values())
    vocab = learn_vocab(word_counts(texts, tok.normalizer, tok.pre_tokenizer), vocab_size, min_frequency, specials)
    ordered = specials + sorted(set(vocab) - set(specials))
    tok.model = models.WordPiece({t: i for i, t in enumerate(ordered)}, unk_token="[UNK]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    with atomic_path(out_dir, is_dir=True) as tmp:
        fast.save_pretrained(tmp)
    return fast


def load_tokenizer(path) -> PreTrainedTokenizerFast:
    """A tokenizer from a local directory (never the hub); MLM needs its [PAD], [CLS], [SEP], [MASK]."""
    if Path(path).is_dir() and not any(Path(path).glob("tokenizer*.json")) and not (Path(path) / "vocab.txt").exists():
        raise TLMInputError(
            f"{path}: no tokenizer files in it (tokenizer.json, tokenizer_config.json or vocab.txt; found "
            f"{sorted(p.name for p in Path(path).iterdir())[:10]}). Fix: set `tokenizer.path` to a directory saved "
            "with save_pretrained, or null to train one."
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise TLMInputError(
            f"{path}: not a readable tokenizer directory ({e}). Fix: set `tokenizer.path` to a local "
            "directory saved with save_pretrained, or null to train one."
        ) from None
    missing = [name for name in ("pad_token", "cls_token", "sep_token", "mask_token") if getattr(tok, name) is None]
    if missing:
        raise TLMInputError(f"{path}: the tokenizer has no {missing}. Fix: use a BERT-style tokenizer (MLM needs them).")
    return tok


@dataclass
class StageConfig:
    """Every hyperparameter of one training stage (names follow HF run_mlm.py where they exist)."""

    batch_size: int  # sequences per optimizer step, over all processes and micro-batches
    learning_rate: float
    max_steps: int | None = None  # the budget: max_steps, epochs or flops (plan_stage turns it into steps)
    epochs: float | None = None
    flops: float | None = None
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # None: warmup_ratio of the steps
    warmup_ratio: float = 0.0
    rho1: int | None = 0  # None: from the data (plan_stage)
    external_epochs: float = 1.0  # rho1 None: passes over S per `epochs` passes over T
    min_steps: int = 0  # floor of an epochs budget
    rho2: float = 0.0
    mlm_probability: float = 0.15
    max_grad_norm: float = 1.0
    eval_steps: int | None = None  # dev evaluation every N steps (0: only at the end; None: see plan_stage)
    pack_external: bool = False  # fill each external MLM row with several documents (tlm.data.Batches)
    patience: int = 0  # stop after this many evaluations without a better dev macro-F1 (0: never)
    gradient_accumulation_steps: int = 1
    save_steps: int = 1000  # resumable checkpoint every N steps (0: none); the schema's default
    save_total_limit: int = 2
    precision: str = "auto"  # auto (bf16 on GPUs that have it, else fp16; fp32 on CPU), fp32, bf16, fp16
    compile: bool = False  # torch.compile the model
    require_gpu: bool = False  # fail, instead of warning, when a GPU was requested and there is none
    prefetch: int | None = None  # batches prepared ahead by a background thread (None: 2 on a GPU, 0 on the CPU)
    pad_to_multiple_of: int | None = None  # row widths (None: 8 with compile, else 1: every width its own)
    seed: int = 0


def is_task_step(step: int, rho1: int, has_external: bool) -> bool:
    """Step `step` (0-based) draws a task batch: the first of every rho1 + 1 steps."""
    return not has_external or step % (rho1 + 1) == 0


def task_loss_weights(rho2: float) -> tuple[float, float]:
    """(weight of L_mlm, weight of L_task) on a task batch: (rho2, 1) / (rho2 + 1)."""
    return rho2 / (rho2 + 1), 1 / (rho2 + 1)


def lr_lambda(warmup: int, total: int):
    """Linear warm-up then linear decay to zero (BERT's schedule)."""
    return lambda step: (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))


def expected_step_flops(config, store: TokenStore, cfg: StageConfig, max_len: int, on_task: bool) -> float:
    """Mean training FLOPs (real tokens) of one step of batch_size rows drawn from `store`."""
    lengths = np.minimum(store.lengths, max_len).astype(np.float64)
    n = cfg.batch_size
    masked = cfg.mlm_probability * n * max(lengths.mean() - 2, 0) if not on_task or cfg.rho2 > 0 else 0  # [CLS], [SEP] never
    return training_flops(config, n * lengths.mean(), n * (lengths**2).mean(), masked, n if on_task else 0)


def plan_stage(cfg: StageConfig, train: TokenStore, external: TokenStore | None, config, max_len: int) -> StageConfig:
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
        rho1 = round(cfg.external_epochs * len(external) / (epochs * len(train))) if external is not None else 0
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
            per_cycle += cfg.rho1 * expected_step_flops(config, external, cfg, max_len, on_task=False)
        if cfg.flops < per_cycle:
            log.warning(
                "flops = %.3g is less than one step's %.3g (a task batch and its rho1 external ones): training that one "
                "step. Fix: raise the stage's flops (or give max_steps or epochs)",
                cfg.flops,
                per_cycle,
            )
        steps = max(1, math.floor(cfg.flops / per_cycle)) * cycle
    else:
        raise TLMInputError("no training budget: set one of max_steps, epochs or flops for the stage.")
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_ratio * steps)
    every = cfg.eval_steps if cfg.eval_steps is not None else math.ceil(steps / 10)
    return dataclasses.replace(cfg, max_steps=steps, warmup_steps=min(warmup, steps), eval_steps=every)


def pick_device(rank: int = 0) -> torch.device:
    return torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None means full fp32."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def predict_proba(model, batches, device, dtype=None) -> np.ndarray:
    """Class probabilities (float32) of every example of `batches` (an iterable of batches), in order."""
    was_training = model.training
    model.eval()
    probs = []
    for batch in batches:
        with autocast(device, dtype):
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        probs.append(torch.softmax(logits.float(), -1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(probs) if probs else np.zeros((0, model.config.num_labels), np.float32)


@dataclass
class TrainResult:
    steps: int = 0
    task_steps: int = 0
    external_steps: int = 0
    tokens: int = 0  # non-padding tokens seen
    padded_tokens: int = 0  # tokens computed, padding included
    flops: int = 0  # on the real tokens
    padded_flops: int = 0  # what the hardware computed, padding included
    seconds: float = 0.0
    data_seconds: float = 0.0  # of which preparing batches
    best_step: int = -1
    stopped_early: bool = False
    planned_steps: int = 0
    dev: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Dist:
    """Where this process stands in data-parallel training (rank 0 of 1 without DDP)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def micro_batches(n: int, d: Dist, accumulation: int) -> list[np.ndarray]:
    """This process's rows of an n-row batch (every world-th row), cut into `accumulation` parts."""
    mine = np.arange(d.rank, n, d.world)
    return [part for part in np.array_split(mine, accumulation) if len(part)]


def trim(batch: dict, rows) -> dict:
    """Rows of a padded batch, re-padded to their own longest row."""
    attn = batch["attention_mask"][rows]
    width = int(attn.sum(1).max())
    return {k: (v[rows][:, :width] if v.ndim == 2 else v[rows]) for k, v in batch.items()}


class Checkpoints:
    """Resumable training state every N steps: written atomically, the newest `keep` kept, and
    reused only by a run with the same settings (their hash is part of the state)."""

    def __init__(self, directory, fingerprint: str, keep: int):
        self.dir, self.fingerprint, self.keep = Path(directory), fingerprint, keep

    def newest(self) -> dict | None:
        for path in sorted(self.dir.glob("step-*"), reverse=True):
            try:
                state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
            except (OSError, RuntimeError, EOFError):
                continue  # unreadable: an older checkpoint may still do
            if state["fingerprint"] == self.fingerprint:
                return state
        return None

    def save(self, step: int, state: dict) -> None:
        with atomic_path(self.dir / f"step-{step:09d}", is_dir=True) as tmp:
            tmp.mkdir()
            torch.save({**state, "fingerprint": self.fingerprint}, tmp / "state.pt")
        for old in sorted(self.dir.glob("step-*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class BatchStream:
    """A stage's batches in step order: the task or external batch of each step, masked for MLM
    where the step needs it. With `ahead` > 0 a background thread prepares them that many steps in
    advance (drawing, masking and pinning overlap the GPU's work on the step before); the batches
    are the same either way. At each step where a checkpoint is saved it records the sources'
    state as of that step, which the thread has already moved past."""

    def __init__(self, task, external, cfg: StageConfig, tokenizer, gen, start: int, ahead: int = 0, pin: bool = False):
        self.task, self.external, self.cfg, self.gen, self.pin = task, external, cfg, gen, pin
        self.special = torch.tensor(tokenizer.all_special_ids)
        self.mask_id, self.vocab = tokenizer.mask_token_id, len(tokenizer)
        self.w_mlm = task_loss_weights(cfg.rho2)[0]
        self.steps = iter(range(start, cfg.max_steps))
        self.queue = queue.Queue(maxsize=ahead) if ahead else None
        if self.queue is not None:
            threading.Thread(target=self._produce, daemon=True).start()

    def _make(self, step: int):
        on_task = is_task_step(step, self.cfg.rho1, self.external is not None)
        batch = (self.task if on_task else self.external).next()
        if not on_task or self.w_mlm > 0:
            batch["input_ids"], batch["mlm_labels"] = mask_tokens(
                batch["input_ids"],
                torch.isin(batch["input_ids"], self.special),
                self.mask_id,
                self.vocab,
                self.cfg.mlm_probability,
                self.gen,
            )
        if self.pin:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        saved = None
        if self.cfg.save_steps and (step + 1) % self.cfg.save_steps == 0:
            saved = {
                "task": copy.deepcopy(self.task.state_dict()),
                "gen": self.gen.get_state(),
                "external": copy.deepcopy(self.external.state_dict()) if self.external is not None else None,
            }
        return on_task, batch, saved

    def _produce(self):
        try:
            for step in self.steps:
                self.queue.put(self._make(step))
        except BaseException as e:  # handed to the training loop, which raises it
            self.queue.put(e)

    def next(self):
        """(on_task, batch, the sources' state to save at this step or None)."""
        if self.queue is None:
            return self._make(next(self.steps))
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


def _forward(net, part: dict):
    """(task logits, MLM logits or None) of a TLM model, or of a plm run's classifier."""
    kwargs = {"mlm_labels": part["mlm_labels"]} if "mlm_labels" in part else {}
    out = net(input_ids=part["input_ids"], attention_mask=part["attention_mask"], **kwargs)
    return out.logits, getattr(out, "mlm_logits", None)


def train_stage(
    model,
    cfg: StageConfig,
    tokenizer,
    task: Batches,
    external: Batches | None,
    dev: Batches | None,
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
    device = device or pick_device(d.rank)
    dtype = amp_dtype(cfg.precision, device)
    peak = peak_flops(device_name(device), dtype is not None)
    model.to(device).train()
    params = [p for p in model.parameters()]
    optim = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=device.type == "cuda",
    )
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(cfg.warmup_steps or 0, cfg.max_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    gen = torch.Generator().manual_seed(cfg.seed)
    w_mlm, w_task = task_loss_weights(cfg.rho2)
    res = TrainResult(planned_steps=cfg.max_steps)
    best_f1, best_state, start_step, since_best, rows = -1.0, None, 0, 0, []

    state = checkpoints.newest() if checkpoints else None
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        scaler.load_state_dict(state["scaler"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:  # dropout on a GPU draws from its own generator
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        task.load_state_dict(state["task"])
        if external is not None:
            external.load_state_dict(state["external"])
        res, best_f1, best_state = TrainResult(**state["result"]), state["best_f1"], state["best_state"]
        start_step, since_best, rows = state["step"], state["since_best"], state["log"]
        log.info("resumed from step %d", start_step)

    net = model
    if cfg.compile:
        net = torch.compile(net, dynamic=True)
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    Path(log_csv).parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter() - res.seconds
    # written as training goes (tail -f shows it), by the main process only
    with open(log_csv if d.main else os.devnull, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerows([LOG_COLUMNS, *rows])
        ahead = cfg.prefetch if cfg.prefetch is not None else (2 if device.type == "cuda" else 0)
        stream = BatchStream(task, external, cfg, tokenizer, gen, start_step, ahead, pin=device.type == "cuda")
        for step in range(start_step, cfg.max_steps):
            tick = time.perf_counter()  # data_seconds: the step's wait for its batch, and the copy to the device
            on_task, batch, sources = stream.next()
            mlm_labels = batch.get("mlm_labels")
            n_masked = max(int((mlm_labels != -100).sum()), 1) if mlm_labels is not None else 1
            n_examples = len(batch["input_ids"])
            parts = [
                {k: v.to(device, non_blocking=True) for k, v in trim(batch, r).items()}
                for r in micro_batches(n_examples, d, cfg.gradient_accumulation_steps)
            ]
            res.data_seconds += time.perf_counter() - tick
            mlm_sum = task_sum = 0.0
            for i, part in enumerate(parts):
                sync = i == len(parts) - 1
                with nullcontext() if sync or d.world == 1 else net.no_sync(), autocast(device, dtype):
                    logits, mlm_logits = _forward(net, part)
                    loss = 0.0
                    if mlm_labels is not None:
                        mlm = F.cross_entropy(mlm_logits.float(), part["mlm_labels"][part["mlm_labels"] != -100], reduction="sum")
                        loss = loss + (w_mlm if on_task else 1.0) * mlm / n_masked
                        mlm_sum += mlm.item()
                    if on_task:
                        tl = F.cross_entropy(logits.float(), part["labels"], reduction="sum")
                        loss = loss + w_task * tl / n_examples
                        task_sum += tl.item()
                    # DDP averages gradients over processes; scale so that they add up instead
                    scaler.scale(loss * d.world).backward()
            scaler.unscale_(optim)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(optim)
            scaler.update()
            sched.step()
            optim.zero_grad(set_to_none=True)

            _count_step(res, model.config, batch, on_task, d, cfg.gradient_accumulation_steps)
            if d.world > 1:  # this process saw only its rows: report the batch's losses
                sums = torch.tensor([mlm_sum, task_sum], device=device)
                dist.all_reduce(sums)
                mlm_sum, task_sum = sums.tolist()
            mlm_loss = mlm_sum / n_masked if mlm_labels is not None else None
            task_loss = task_sum / n_examples if on_task else None
            loss_value = (w_task * task_loss + w_mlm * (mlm_loss or 0.0)) if on_task else mlm_loss
            if not math.isfinite(loss_value):
                raise TLMInputError(
                    f"the loss is {loss_value} at step {step + 1}: training diverged. "
                    "Fix: lower the stage's learning_rate (or raise its warm-up)."
                )

            last = step + 1 == cfg.max_steps
            dev_f1 = dev_acc = ""
            if d.main and dev is not None and (last or (cfg.eval_steps and (step + 1) % cfg.eval_steps == 0)):
                scores = classification_metrics(
                    dev.store.labels, predict_proba(model, dev.epoch(), device, dtype).argmax(-1), model.config.num_labels
                )
                dev_f1, dev_acc = scores["macro_f1"], scores["accuracy"]
                since_best += 1
                if dev_f1 > best_f1 or not keep_best:
                    best_f1, res.best_step, res.dev, since_best = dev_f1, step + 1, scores, 0
                    best_state = copy.deepcopy(model.state_dict()) if keep_best else None
                res.stopped_early = bool(cfg.patience and since_best >= cfg.patience and not last)
            res.seconds = time.perf_counter() - start
            rate = res.tokens / res.seconds
            rows.append(
                [
                    step + 1,
                    "task" if on_task else "external",
                    f"{loss_value:.4f}",
                    "" if mlm_loss is None else f"{mlm_loss:.4f}",
                    "" if task_loss is None else f"{task_loss:.4f}",
                    f"{sched.get_last_lr()[0]:.3e}",
                    res.tokens,
                    res.padded_tokens,
                    res.flops,
                    f"{res.seconds:.3f}",
                    f"{res.data_seconds:.3f}",
                    f"{rate:.0f}",
                    f"{res.flops / res.seconds / peak:.4f}" if peak else "",
                    dev_f1,
                    dev_acc,
                ]
            )
            if writer:
                writer.writerow(rows[-1])
            if d.main and ((step + 1) % 100 == 0 or last or res.stopped_early):
                log.info(
                    "step %d/%d loss %.4f  %.0f tokens/s (real), %.1f%% padding, %.2e FLOPs",
                    step + 1,
                    cfg.max_steps,
                    loss_value,
                    rate,
                    100 * (1 - res.tokens / res.padded_tokens),
                    res.flops,
                )
            if d.world > 1 and cfg.patience:  # every process stops at the same step
                flag = torch.tensor([res.stopped_early], device=device)
                dist.broadcast(flag, 0)
                res.stopped_early = bool(flag.item())
            if res.stopped_early:
                if d.main:
                    log.info(
                        "early stop at step %d: no better dev macro-F1 in %d evaluations (best %.4f at step %d)",
                        step + 1,
                        since_best,
                        best_f1,
                        res.best_step,
                    )
                break
            if checkpoints and d.main and cfg.save_steps and (step + 1) % cfg.save_steps == 0 and not last:
                checkpoints.save(
                    step + 1,
                    {
                        "step": step + 1,
                        "model": model.state_dict(),
                        "optim": optim.state_dict(),
                        "sched": sched.state_dict(),
                        "scaler": scaler.state_dict(),
                        "gen": sources["gen"],
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "task": sources["task"],
                        "external": sources["external"],
                        "result": asdict(res),
                        "best_f1": best_f1,
                        "best_state": best_state,
                        "since_best": since_best,
                        "log": rows,
                    },
                )
    if best_state is not None and res.best_step != res.steps:
        model.load_state_dict(best_state)
    return res


def _count_step(res: TrainResult, config, batch: dict, on_task: bool, d: Dist, accumulation: int) -> None:
    """Add one step's tokens and FLOPs to `res`: on real tokens, and as computed (each process's
    micro-batches padded to their own width)."""
    lengths = batch["attention_mask"].sum(1).numpy()
    masked = (batch["mlm_labels"] != -100).sum(1).numpy() if "mlm_labels" in batch else np.zeros(len(lengths), np.int64)
    res.steps += 1
    res.task_steps += on_task
    res.external_steps += not on_task
    res.tokens += int(lengths.sum())
    res.flops += step_flops(config, lengths, int(masked.sum()), task_head=on_task)
    for k in range(d.world):
        for r in micro_batches(len(lengths), Dist(k, d.world), accumulation):
            width = int(lengths[r].max())
            res.padded_tokens += width * len(r)
            res.padded_flops += step_flops(config, [width] * len(r), int(masked[r].sum()), task_head=on_task)


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(model, tokenizer, result: TrainResult, out_dir, log_csv: Path, extra: dict) -> None:
    """save_pretrained (model + tokenizer) plus the stage's cost record and training log, atomically."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(
            {**asdict(result), **throughput(result, extra["device"], extra["low_precision"]), **extra}, tmp / "train_result.json"
        )
        shutil.copyfile(log_csv, tmp / "train_log.csv")


def throughput(result: TrainResult, device: str, low_precision: bool) -> dict:
    """Real tokens per second, the share of computed tokens that were padding, and the MFU of the
    FLOPs on real tokens (against the card's dense bf16 peak, where it is known)."""
    seconds = max(result.seconds, 1e-9)
    peak = peak_flops(device, low_precision)
    return {
        "tokens_per_second": result.tokens / seconds,
        "padding_share": 1 - result.tokens / max(result.padded_tokens, 1),
        "mfu": result.flops / seconds / peak if peak else None,
    }


def tokenize_texts(tokenizer_dir, parquet, max_seq_length: int, out_dir, labels_json=None, max_rank: int = 0) -> TokenStore:
    """Tokenize a Parquet file's `text` column once (and map its `label`s) for every run to stream.

    With `max_rank`, only external documents with best_rank <= max_rank are kept: S for a smaller
    K, cut from the task's retrieval without retrieving again.
    """
    import pandas as pd

    columns = ["text", "label"] if labels_json else ["text"]
    df = pd.read_parquet(parquet, filters=[("best_rank", "<=", max_rank)] if max_rank else None, columns=columns)
    labels = None
    if labels_json:
        label_id = {label: i for i, label in enumerate(read_json(labels_json)["labels"])}
        labels = df["label"].map(label_id).to_numpy()
    store = TokenStore.from_texts(load_tokenizer(tokenizer_dir), df["text"], max_seq_length, labels)
    store.save(out_dir)
    return store


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
    if world > 1:
        port = _free_port()
        torch.multiprocessing.spawn(
            _ddp_worker,
            nprocs=world,
            args=(world, port, backend or ("nccl" if torch.cuda.is_available() else "gloo"), *args),
        )
    else:
        _run_stage(Dist(), *args)


def check_gpu(requested: int, required: bool) -> str:
    """The device description a job records: a GPU asked for but absent is said there (and in the log)."""
    if requested and not torch.cuda.is_available():
        message = (
            f"{requested} GPU(s) requested (resources.gpu) but CUDA finds none: training on the CPU. "
            "Fix: run on a GPU node with a CUDA build of torch, or set resources.gpu: 0"
        )
        if required:
            raise TLMInputError(message.replace("training on the CPU", "stopping (trainer.require_gpu: true)"))
        log.warning("%s", message)
        return f"cpu ({requested} GPU requested, none found)"
    return device_name(pick_device())


def data_parallel_processes(gpus: int) -> int:
    """One DDP process per GPU a job was given, when it was given several and they are there."""
    return gpus if gpus > 1 and torch.cuda.device_count() >= gpus else 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, backend, *args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        _run_stage(Dist(rank, world), *args)
    finally:
        dist.destroy_process_group()


def stage_config(stage: str, settings: dict) -> StageConfig:
    trainer = settings.get("trainer", {})
    return StageConfig(**settings[stage], **trainer, seed=settings["seed"])


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
    extra = {}
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
            stage,
            len(train),
            0 if external is None else len(external.store),
            d.world,
            cfg,
        )
    checkpoints = Checkpoints(f"{out_dir}.checkpoints", fingerprint([stage, settings, d.world]), cfg.save_total_limit)
    result = train_stage(
        model, cfg, tokenizer, task, external, dev, Path(log_csv), keep_best=stage == "stage2", checkpoints=checkpoints, d=d
    )
    if d.main:
        final = model.classifier_model() if stage == "stage2" and isinstance(model, TLMModel) else model
        save_checkpoint(
            final,
            tokenizer,
            result,
            out_dir,
            Path(log_csv),
            {
                "stage": stage,
                "settings": settings,
                "plan": asdict(cfg),
                "processes": d.world,
                "device": device,
                "low_precision": amp_dtype(cfg.precision, pick_device(d.rank)) is not None,
                "train_examples": len(train),
                **extra,
            },
        )
        checkpoints.clear()
