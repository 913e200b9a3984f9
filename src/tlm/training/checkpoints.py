"""Resumable training state, and a stage's finished checkpoint (save_pretrained plus its cost record)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tlm.io import atomic_path, write_json
from tlm.metrics import peak_flops

if TYPE_CHECKING:
    from tlm.training.loop import TrainResult


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
