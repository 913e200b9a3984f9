"""Resumable training state (what a stage has done so far, saved and restored whole), and a stage's
finished checkpoint (save_pretrained plus its cost record)."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tlm.io import atomic_path, write_json
from tlm.metrics import peak_flops
from tlm.tokens import Batches

log = logging.getLogger(__name__)


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


@dataclass
class Progress:
    """What a resumed stage takes over: the result so far, the best dev score and weights, the
    evaluations since the best, the log's rows and the next step."""

    result: TrainResult
    best_f1: float = -1.0
    best_state: dict | None = None
    since_best: int = 0
    rows: list = field(default_factory=list)
    step: int = 0

    def evaluated(self, scores: dict, step: int, model, keep_best: bool) -> None:
        self.since_best += 1
        if scores["macro_f1"] > self.best_f1 or not keep_best:
            self.best_f1, self.result.best_step, self.result.dev, self.since_best = (
                scores["macro_f1"],
                step,
                scores,
                0,
            )
            self.best_state = copy.deepcopy(model.state_dict()) if keep_best else None


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


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(
    model, tokenizer, result: TrainResult, out_dir, log_csv: Path, extra: dict
) -> None:
    """save_pretrained (model + tokenizer) plus the stage's cost record and training log, atomically."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(
            {
                **asdict(result),
                **throughput(result, extra["device"], extra["low_precision"]),
                **extra,
            },
            tmp / "train_result.json",
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


def resume(
    state: dict, model, optim, sched, scaler, gen, task: Batches, external: Batches | None, device
) -> Progress:
    """Every piece of training state back as a checkpoint saved it (`snapshot`)."""
    model.load_state_dict(state["model"])
    optim.load_state_dict(state["optim"])
    sched.load_state_dict(state["sched"])
    scaler.load_state_dict(state["scaler"])
    gen.set_state(state["gen"])
    torch.set_rng_state(state["torch_rng"])
    if (
        device.type == "cuda" and state.get("cuda_rng") is not None
    ):  # dropout on a GPU draws from its own generator
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    task.load_state_dict(state["task"])
    if external is not None:
        external.load_state_dict(state["external"])
    log.info("resumed from step %d", state["step"])
    return Progress(
        TrainResult(**state["result"]),
        state["best_f1"],
        state["best_state"],
        state["since_best"],
        state["log"],
        state["step"],
    )


def snapshot(step: int, run: Progress, model, optim, sched, scaler, device, sources: dict) -> dict:
    """A resumable checkpoint's contents at `step` (`sources`: the batch sources' state then)."""
    return {
        "step": step,
        "model": model.state_dict(),
        "optim": optim.state_dict(),
        "sched": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "gen": sources["gen"],
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "task": sources["task"],
        "external": sources["external"],
        "result": asdict(run.result),
        "best_f1": run.best_f1,
        "best_state": run.best_state,
        "since_best": run.since_best,
        "log": run.rows,
    }
