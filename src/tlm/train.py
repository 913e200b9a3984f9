"""Tokenizer training, the two TLM training stages and prediction.

Stage 1 (joint): every step draws ONE batch. Of every rho1 + 1 steps, one is a task batch and
rho1 are external batches (the reference code's schedule). An external batch's loss is its MLM
loss; a task batch's is (rho2 * L_mlm + L_task) / (rho2 + 1), computed on the masked task text.
Stage 2 (rho1 = rho2 = 0): the task loss alone, with a fresh classification head; the checkpoint
with the best dev macro-F1 is kept (checkpoints are picked on dev, never on test).

One step's batch is the same whatever the hardware: it is drawn and masked identically on every
process, then split over `world` DDP processes and `gradient_accumulation_steps` micro-batches.
Each part's loss is a sum divided by the whole batch's count (masked tokens, examples), so the
gradient equals the single-process one and the schedule does not depend on the GPU count.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tlm.config import pretrained_dir
from tlm.data import Batches, TokenStore, mask_tokens
from tlm.io import TLMInputError, atomic_path, read_json, write_json
from tlm.metrics import classification_metrics, step_flops
from tlm.model import PLMModel, TLMModel, make_config

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
LOG_COLUMNS = ["step", "batch", "loss", "mlm_loss", "task_loss", "lr", "tokens", "flops", "seconds", "dev_macro_f1", "dev_accuracy"]


def train_tokenizer(texts, vocab_size: int, min_frequency: int, out_dir) -> PreTrainedTokenizerFast:
    """A lowercased BERT-style WordPiece vocabulary learned from the task and external texts."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS.values()))
    tok.train_from_iterator(texts, trainer)
    # The trainer numbers tokens of equal rank in hash order, which changes from process to process;
    # canonical ids (specials first, then sorted) make the same vocabulary always give the same ids.
    # (Ties at the vocab_size cut-off are still broken in hash order: the set itself can differ by
    # a few rare tokens between two trainings.)
    specials = list(SPECIAL_TOKENS.values())
    ordered = specials + sorted(set(tok.get_vocab()) - set(specials))
    tok.model = models.WordPiece({t: i for i, t in enumerate(ordered)}, unk_token="[UNK]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    with atomic_path(out_dir, is_dir=True) as tmp:
        fast.save_pretrained(tmp)
    return fast


def load_tokenizer(path) -> PreTrainedTokenizerFast:
    """A tokenizer from a local directory (never the hub); MLM needs its [PAD], [CLS], [SEP], [MASK]."""
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise TLMInputError(f"{path}: not a readable tokenizer directory ({e}). Fix: set `tokenizer.path` to a local "
                            "directory saved with save_pretrained, or null to train one.") from None
    missing = [name for name in ("pad_token", "cls_token", "sep_token", "mask_token") if getattr(tok, name) is None]
    if missing:
        raise TLMInputError(f"{path}: the tokenizer has no {missing}. Fix: use a BERT-style tokenizer (MLM needs them).")
    return tok


@dataclass
class StageConfig:
    """Every hyperparameter of one training stage (names follow HF run_mlm.py where they exist)."""

    max_steps: int
    batch_size: int  # sequences per optimizer step, over all processes and micro-batches
    learning_rate: float
    weight_decay: float = 0.01
    warmup_steps: int = 0
    rho1: int = 0
    rho2: float = 0.0
    mlm_probability: float = 0.15
    max_grad_norm: float = 1.0
    eval_steps: int = 0  # 0: only at the end
    gradient_accumulation_steps: int = 1
    save_steps: int = 0  # resumable checkpoint every N steps (0: none)
    save_total_limit: int = 2
    precision: str = "auto"  # auto (bf16 on GPUs that have it, else fp16; fp32 on CPU), fp32, bf16, fp16
    compile: bool = False  # torch.compile the model
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


def pick_device(rank: int = 0) -> torch.device:
    return torch.device("cuda", rank) if torch.cuda.is_available() else torch.device("cpu")


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
def predict(model: TLMModel | PLMModel, batches: Batches, device, dtype=None) -> np.ndarray:
    was_training = model.training
    model.eval()
    preds = []
    for batch in batches.epoch():
        with autocast(device, dtype):
            _, logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        preds.append(logits.argmax(-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(preds)


@dataclass
class TrainResult:
    steps: int = 0
    task_steps: int = 0
    external_steps: int = 0
    tokens: int = 0  # non-padding tokens seen
    flops: int = 0
    seconds: float = 0.0
    best_step: int = -1
    dev: dict = field(default_factory=dict)


@dataclass
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


def train_stage(
    model: TLMModel | PLMModel,
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
    """Run one stage in place on `model`, evaluating on dev every cfg.eval_steps steps and at the end.

    With `keep_best`, the weights with the best dev macro-F1 are restored at the end. With
    `checkpoints`, training resumes from the newest matching checkpoint and saves new ones.
    `device` defaults to GPU `d.rank` where there is a GPU, else the CPU.
    """
    device = device or pick_device(d.rank)
    dtype = amp_dtype(cfg.precision, device)
    model.to(device).train()
    params = [p for p in model.parameters()]
    optim = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=cfg.learning_rate, betas=(0.9, 0.98), eps=1e-6, fused=device.type == "cuda",
    )
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(cfg.warmup_steps, cfg.max_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    gen = torch.Generator().manual_seed(cfg.seed)
    special = torch.tensor(tokenizer.all_special_ids)
    w_mlm, w_task = task_loss_weights(cfg.rho2)
    res = TrainResult()
    best_f1, best_state, start_step = -1.0, None, 0

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
        res, best_f1, best_state, start_step = TrainResult(**state["result"]), state["best_f1"], state["best_state"], state["step"]
        log.info("resumed from step %d", start_step)

    net = model
    if cfg.compile:
        net = torch.compile(net, dynamic=True)
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    rows = _read_log(log_csv, start_step) if d.main else []
    log_csv.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_csv, "w", newline="") if d.main else None
    writer = csv.writer(fh) if fh else None
    if writer:
        writer.writerows([LOG_COLUMNS, *rows])
    start = time.perf_counter() - res.seconds
    try:
        for step in range(start_step, cfg.max_steps):
            on_task = is_task_step(step, cfg.rho1, external is not None)
            batch = (task if on_task else external).next()
            mlm_labels = None
            if not on_task or w_mlm > 0:
                batch["input_ids"], mlm_labels = mask_tokens(
                    batch["input_ids"], torch.isin(batch["input_ids"], special), tokenizer.mask_token_id,
                    len(tokenizer), cfg.mlm_probability, gen,
                )
                batch["mlm_labels"] = mlm_labels
            n_masked = max(int((mlm_labels != -100).sum()), 1) if mlm_labels is not None else 1
            n_examples = len(batch["input_ids"])
            parts = micro_batches(n_examples, d, cfg.gradient_accumulation_steps)
            mlm_sum = task_sum = 0.0
            for i, rows in enumerate(parts):
                part = {k: v.to(device) for k, v in trim(batch, rows).items()}
                sync = i == len(parts) - 1
                with (nullcontext() if sync or d.world == 1 else net.no_sync()), autocast(device, dtype):
                    mlm_logits, logits = net(part["input_ids"], part["attention_mask"], part.get("mlm_labels"))
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

            res.steps += 1
            res.task_steps += on_task
            res.external_steps += not on_task
            res.tokens += int(batch["attention_mask"].sum())
            res.flops += sum(
                step_flops(model.config, len(r), int(batch["attention_mask"][r].sum(1).max()),
                           int((mlm_labels[r] != -100).sum()) if mlm_labels is not None else 0, task_head=on_task)
                for k in range(d.world) for r in micro_batches(n_examples, Dist(k, d.world), cfg.gradient_accumulation_steps)
            )
            if d.world > 1:  # this process saw only its rows: report the batch's losses
                sums = torch.tensor([mlm_sum, task_sum], device=device)
                dist.all_reduce(sums)
                mlm_sum, task_sum = sums.tolist()
            mlm_loss = mlm_sum / n_masked if mlm_labels is not None else None
            task_loss = task_sum / n_examples if on_task else None
            loss_value = (w_task * task_loss + w_mlm * (mlm_loss or 0.0)) if on_task else mlm_loss
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step + 1}: lower the learning rate")

            last = step + 1 == cfg.max_steps
            dev_f1 = dev_acc = ""
            if d.main and dev is not None and (last or (cfg.eval_steps and (step + 1) % cfg.eval_steps == 0)):
                scores = classification_metrics(dev.store.labels, predict(model, dev, device, dtype), model.config.num_labels)
                dev_f1, dev_acc = scores["macro_f1"], scores["accuracy"]
                if dev_f1 > best_f1 or not keep_best:
                    best_f1, res.best_step, res.dev = dev_f1, step + 1, scores
                    best_state = copy.deepcopy(model.state_dict()) if keep_best and not last else None
            res.seconds = time.perf_counter() - start
            if writer:
                writer.writerow([
                    step + 1, "task" if on_task else "external", f"{loss_value:.4f}",
                    "" if mlm_loss is None else f"{mlm_loss:.4f}", "" if task_loss is None else f"{task_loss:.4f}",
                    f"{sched.get_last_lr()[0]:.3e}", res.tokens, res.flops, f"{res.seconds:.3f}", dev_f1, dev_acc,
                ])
            if d.main and ((step + 1) % 100 == 0 or last):
                log.info("step %d/%d loss %.4f  %.0f tokens/s  %.2e FLOPs", step + 1, cfg.max_steps, loss_value, res.tokens / res.seconds, res.flops)
            if checkpoints and d.main and cfg.save_steps and (step + 1) % cfg.save_steps == 0 and not last:
                fh.flush()
                checkpoints.save(step + 1, {
                    "step": step + 1, "model": model.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
                    "scaler": scaler.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "task": task.state_dict(), "external": external.state_dict() if external is not None else None,
                    "result": asdict(res), "best_f1": best_f1, "best_state": best_state,
                })
    finally:
        if fh:
            fh.close()
    if best_state is not None and res.best_step != cfg.max_steps:
        model.load_state_dict(best_state)
    return res


def _read_log(path: Path, upto: int) -> list[list[str]]:
    """The rows of an earlier attempt's training log up to the step training resumes from."""
    if upto == 0 or not path.exists():
        return []
    with open(path, newline="") as fh:
        return [row for row in list(csv.reader(fh))[1:] if int(row[0]) <= upto]


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(model: TLMModel | PLMModel, tokenizer, result: TrainResult, out_dir, log_csv: Path, extra: dict) -> None:
    """save_pretrained (model + tokenizer) plus the stage's cost record and training log, atomically."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json({**asdict(result), **extra, "device": str(pick_device())}, tmp / "train_result.json")
        shutil.copyfile(log_csv, tmp / "train_log.csv")


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


def run_stage(stage: str, settings: dict, tokenizer_dir, tokens_dir, external_dir, init_dir, out_dir, log_csv,
              world: int = 1, backend: str | None = None) -> None:
    """Train stage 1 (from scratch) or stage 2 (from `init_dir`) of one run and save its checkpoint.

    `settings` is tlm.config.run_settings() (model, stage1/stage2, trainer, seed); `tokens_dir`
    holds the tokenized task splits, `external_dir` (or None) the tokenized external data. With world > 1,
    `world` data-parallel processes are started on this machine (one per GPU; gloo on CPU).
    """
    if world > 1:
        port = _free_port()
        torch.multiprocessing.spawn(
            _ddp_worker, nprocs=world,
            args=(world, port, backend or ("nccl" if torch.cuda.is_available() else "gloo"),
                  stage, settings, tokenizer_dir, tokens_dir, external_dir, init_dir, out_dir, log_csv),
        )
    else:
        _run_stage(Dist(), stage, settings, tokenizer_dir, tokens_dir, external_dir, init_dir, out_dir, log_csv)


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


def _run_stage(d: Dist, stage, settings, tokenizer_dir, tokens_dir, external_dir, init_dir, out_dir, log_csv) -> None:
    seed = settings["seed"]
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(tokenizer_dir)
    cfg = StageConfig(**settings[stage], **settings.get("trainer", {}), seed=seed)
    if cfg.batch_size < d.world * cfg.gradient_accumulation_steps:
        raise TLMInputError(f"{stage}.batch_size {cfg.batch_size} is smaller than {d.world} processes x "
                            f"{cfg.gradient_accumulation_steps} gradient_accumulation_steps. Fix: raise batch_size or lower the others.")
    max_len = settings["model"]["max_seq_length"]
    special = dict(pad_id=tokenizer.pad_token_id, max_len=max_len, sep_id=tokenizer.sep_token_id)
    tokens_dir = Path(tokens_dir)
    train = TokenStore.load(tokens_dir / "train")
    # Task batches are not length-bucketed: text length correlates with the label (a batch of only
    # short texts is a batch of a few classes), which slows and biases the task loss.
    task = Batches(train, cfg.batch_size, seed=seed, **special)
    dev = Batches(TokenStore.load(tokens_dir / "dev"), 256, seed=seed, shuffle=False, **special)
    external = None
    if stage == "stage1" and external_dir:
        external = Batches(TokenStore.load(external_dir), cfg.batch_size, seed=seed + 1, bucket=50, **special)
    num_labels = int(train.labels.max()) + 1
    if settings.get("pretrained"):  # the plm baseline: a pretrained encoder, fine-tuned like stage 2
        model = PLMModel.from_pretrained(pretrained_dir(settings["pretrained"]), num_labels=num_labels, local_files_only=True)
        if not all(hasattr(model.config, a) for a in ("num_hidden_layers", "hidden_size", "intermediate_size")):
            raise TLMInputError(f"{settings['pretrained']}: not a BERT-style encoder config, so its FLOPs cannot be counted. "
                                "Fix: use a BERT-style checkpoint (num_hidden_layers, hidden_size, intermediate_size).")
    elif init_dir is None:
        m = settings["model"]
        model = TLMModel(make_config(m["preset"], len(tokenizer), num_labels, max_len, tokenizer.pad_token_id, m.get("dropout", 0.1)))
    else:
        model = TLMModel.from_pretrained(init_dir)
        model.reset_classifier()  # the reference code starts stage 2 with a fresh task head
    if d.main:
        log.info("%s: %d task examples, %d external documents, %d processes, %s", stage, len(train),
                 0 if external is None else len(external.store), d.world, cfg)
    checkpoints = Checkpoints(f"{out_dir}.checkpoints", fingerprint([stage, settings, d.world]), cfg.save_total_limit)
    result = train_stage(model, cfg, tokenizer, task, external, dev, Path(log_csv), keep_best=stage == "stage2",
                         checkpoints=checkpoints, d=d)
    if d.main:
        save_checkpoint(model, tokenizer, result, out_dir, Path(log_csv), {"stage": stage, "settings": settings, "processes": d.world})
        checkpoints.clear()
