"""A stage's batches in step order, and each step's batch cut into this process's micro-batches."""

from __future__ import annotations

import copy
import queue
import threading

import numpy as np
import torch

from tlm.settings import StageConfig
from tlm.tokens import mask_tokens
from tlm.training.ddp import Dist
from tlm.training.plan import is_task_step, task_loss_weights


def micro_batches(n: int, d: Dist, accumulation: int) -> list[np.ndarray]:
    """This process's rows of an n-row batch (every world-th row), cut into `accumulation` parts."""
    mine = np.arange(d.rank, n, d.world)
    return [part for part in np.array_split(mine, accumulation) if len(part)]


def trim(batch: dict, rows) -> dict:
    """Rows of a padded batch, re-padded to their own longest row."""
    attn = batch["attention_mask"][rows]
    width = int(attn.sum(1).max())
    return {k: (v[rows][:, :width] if v.ndim == 2 else v[rows]) for k, v in batch.items()}


class BatchStream:
    """A stage's batches in step order: the task or external batch of each step, masked for MLM
    where the step needs it. With `ahead` > 0 a background thread prepares them that many steps in
    advance (drawing, masking and pinning overlap the GPU's work on the step before); the batches
    are the same either way. At each step where a checkpoint is saved it records the sources'
    state as of that step, which the thread has already moved past."""

    def __init__(
        self,
        task,
        external,
        cfg: StageConfig,
        tokenizer,
        gen,
        start: int,
        ahead: int = 0,
        pin: bool = False,
    ):
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
                "external": copy.deepcopy(self.external.state_dict())
                if self.external is not None
                else None,
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
