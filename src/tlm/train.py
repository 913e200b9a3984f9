"""Tokenizer training, the two TLM training stages and prediction.

Stage 1 (joint): every step draws ONE batch. Of every rho1 + 1 steps, one is a task batch and
rho1 are external batches (the reference code's schedule). An external batch's loss is its MLM
loss; a task batch's is (rho2 * L_mlm + L_task) / (rho2 + 1), computed on the masked task text.
Stage 2 (rho1 = rho2 = 0): the task loss alone, with a fresh classification head; the checkpoint
with the best dev macro-F1 is kept (checkpoints are picked on dev, never on test).
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tlm.data import Batches, mask_tokens
from tlm.io import atomic_path, write_json
from tlm.metrics import classification_metrics, step_flops
from tlm.model import TLMModel

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}


def train_tokenizer(texts, vocab_size: int, min_frequency: int, out_dir) -> PreTrainedTokenizerFast:
    """A lowercased BERT-style WordPiece vocabulary learned from the task and external texts."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS.values()))
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    with atomic_path(out_dir, is_dir=True) as tmp:
        fast.save_pretrained(tmp)
    return fast


def load_tokenizer(path) -> PreTrainedTokenizerFast:
    """A tokenizer from a local directory (never the hub); it must have [PAD], [CLS] and [MASK]-like tokens."""
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    missing = [name for name in ("pad_token", "cls_token", "mask_token") if getattr(tok, name) is None]
    if missing:
        raise ValueError(f"{path}: the tokenizer has no {missing}. Fix: use a BERT-style tokenizer (MLM needs them).")
    return tok


@dataclass
class StageConfig:
    """Every hyperparameter of one training stage (names follow HF run_mlm.py where they exist)."""

    max_steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.01
    warmup_steps: int = 0
    rho1: int = 0
    rho2: float = 0.0
    mlm_probability: float = 0.15
    max_grad_norm: float = 1.0
    eval_steps: int = 0  # 0: only at the end
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


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict(model: TLMModel, batches: Batches, device) -> np.ndarray:
    model.eval()
    preds = []
    for batch in batches.epoch():
        with autocast(device):
            _, _, logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        preds.append(logits.argmax(-1).cpu().numpy())
    model.train()
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


def train_stage(
    model: TLMModel,
    cfg: StageConfig,
    tokenizer,
    task: Batches,
    external: Batches | None,
    dev: Batches | None,
    dev_labels: np.ndarray | None,
    log_csv: Path,
    keep_best: bool = True,
) -> TrainResult:
    """Run one stage in place on `model`, evaluating on dev every cfg.eval_steps steps and at the end.

    With `keep_best`, the weights with the best dev macro-F1 are restored at the end.
    """
    device = pick_device()
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate, betas=(0.9, 0.98), eps=1e-6, fused=device.type == "cuda",
    )
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(cfg.warmup_steps, cfg.max_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    special = torch.tensor(tokenizer.all_special_ids)
    w_mlm, w_task = task_loss_weights(cfg.rho2)
    task_it = iter(task)
    ext_it = iter(external) if external is not None else None
    res = TrainResult()
    best_f1, best_state = -1.0, None
    start = time.perf_counter()
    with open(log_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "batch", "loss", "mlm_loss", "task_loss", "lr", "tokens", "flops", "seconds", "dev_macro_f1", "dev_accuracy"])
        for step in range(cfg.max_steps):
            on_task = is_task_step(step, cfg.rho1, ext_it is not None)
            batch = next(task_it if on_task else ext_it)
            input_ids, attn = batch["input_ids"], batch["attention_mask"]
            mlm_labels = None
            if not on_task or w_mlm > 0:
                input_ids, mlm_labels = mask_tokens(
                    input_ids, torch.isin(input_ids, special), tokenizer.mask_token_id, len(tokenizer), cfg.mlm_probability, gen
                )
            with autocast(device):
                mlm_loss, task_loss, _ = model(
                    input_ids.to(device), attn.to(device),
                    mlm_labels=None if mlm_labels is None else mlm_labels.to(device),
                    labels=batch["labels"].to(device) if on_task else None,
                )
            if on_task:
                loss = w_task * task_loss + (w_mlm * mlm_loss if mlm_labels is not None else 0.0)
            else:
                loss = mlm_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)

            res.steps += 1
            res.task_steps += on_task
            res.external_steps += not on_task
            res.tokens += int(attn.sum())
            masked = int((mlm_labels != -100).sum()) if mlm_labels is not None else 0
            res.flops += step_flops(model.config, *input_ids.shape, masked, task_head=on_task)
            dev_f1 = dev_acc = ""
            last = step + 1 == cfg.max_steps
            if dev is not None and (last or (cfg.eval_steps and (step + 1) % cfg.eval_steps == 0)):
                scores = classification_metrics(dev_labels, predict(model, dev, device), model.config.num_labels)
                dev_f1, dev_acc = scores["macro_f1"], scores["accuracy"]
                if dev_f1 > best_f1 or not keep_best:
                    best_f1, res.best_step, res.dev = dev_f1, step + 1, scores
                    best_state = copy.deepcopy(model.state_dict()) if keep_best and not last else None
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at step {step + 1}: lower the learning rate")
            writer.writerow([
                step + 1, "task" if on_task else "external", f"{loss.item():.4f}",
                "" if mlm_labels is None else f"{mlm_loss.item():.4f}", "" if not on_task else f"{task_loss.item():.4f}",
                f"{sched.get_last_lr()[0]:.3e}", res.tokens, res.flops, f"{time.perf_counter() - start:.1f}", dev_f1, dev_acc,
            ])
            if (step + 1) % 100 == 0 or last:
                elapsed = time.perf_counter() - start
                log.info("step %d/%d loss %.4f  %.0f tokens/s  %.2e FLOPs", step + 1, cfg.max_steps, loss.item(), res.tokens / elapsed, res.flops)
    if best_state is not None and res.best_step != cfg.max_steps:
        model.load_state_dict(best_state)
    res.seconds = time.perf_counter() - start
    return res


def save_checkpoint(model: TLMModel, tokenizer, result: TrainResult, out_dir, log_csv: Path, extra: dict) -> None:
    """save_pretrained (model + tokenizer) plus the stage's cost record, written atomically."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json({**vars(result), **extra, "device": str(pick_device())}, tmp / "train_result.json")
        shutil.copyfile(log_csv, tmp / "train_log.csv")


def encode(tokenizer, texts, max_seq_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_seq_length)["input_ids"]


def run_stage(stage: str, settings: dict, tokenizer_dir, task_dir, external_paths: list, init_dir, out_dir, log_csv) -> TrainResult:
    """Train stage 1 (from scratch) or stage 2 (from `init_dir`) of one run and save its checkpoint.

    `settings` is tlm.config.run_settings(): model, stage1, stage2, seed and external.
    """
    import pandas as pd

    from tlm.io import read_json
    from tlm.model import make_config

    seed = settings["seed"]
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(tokenizer_dir)
    labels = read_json(Path(task_dir) / "labels.json")["labels"]
    label_id = {label: i for i, label in enumerate(labels)}
    max_len = settings["model"]["max_seq_length"]
    cfg = StageConfig(**settings[stage], seed=seed)
    train = pd.read_parquet(Path(task_dir) / "train.parquet")
    dev = pd.read_parquet(Path(task_dir) / "dev.parquet")
    pad = tokenizer.pad_token_id
    task = Batches(encode(tokenizer, train["text"], max_len), train["label"].map(label_id).to_numpy(), cfg.batch_size, pad, seed)
    dev_batches = Batches(encode(tokenizer, dev["text"], max_len), None, 256, pad, seed, shuffle=False)
    external = None
    if stage == "stage1" and external_paths:
        texts = pd.concat([pd.read_parquet(p, columns=["text"]) for p in external_paths])["text"]
        external = Batches(encode(tokenizer, texts, max_len), None, cfg.batch_size, pad, seed + 1)
    if init_dir is None:
        m = settings["model"]
        model = TLMModel(make_config(m["preset"], len(tokenizer), len(labels), max_len, pad, m.get("dropout", 0.1)))
    else:
        model = TLMModel.from_pretrained(init_dir)
        model.reset_classifier()  # the reference code starts stage 2 with a fresh task head
    log.info("%s: %d task examples, %d external documents, %s", stage, len(train), 0 if external is None else len(external.ids), cfg)
    result = train_stage(
        model, cfg, tokenizer, task, external, dev_batches, dev["label"].map(label_id).to_numpy(), Path(log_csv),
        keep_best=stage == "stage2",
    )
    save_checkpoint(model, tokenizer, result, out_dir, Path(log_csv), {"stage": stage, "settings": settings})
    return result
