"""Quality (accuracy, macro/micro F1) and cost (training FLOPs) of a run."""

from __future__ import annotations

import numpy as np
from transformers import BertConfig


def classification_metrics(y_true, y_pred, num_labels: int) -> dict[str, float]:
    """Accuracy, macro-F1 (mean over labels present in y_true or y_pred) and micro-F1."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = np.bincount(y_true * num_labels + y_pred, minlength=num_labels**2).reshape(num_labels, num_labels)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    present = denom > 0
    accuracy = tp.sum() / max(len(y_true), 1)
    return {
        "accuracy": float(accuracy),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        # single-label multi-class: every error is one FP and one FN, so micro-F1 = accuracy
        "micro_f1": float(accuracy),
    }


def step_flops(config: BertConfig, batch_size: int, seq_len: int, masked_tokens: int, task_head: bool) -> int:
    """Forward + backward FLOPs (3x forward, 2 per multiply-add) of one training step.

    Counts every matmul the model runs: the encoder's dense layers on all batch_size x seq_len
    positions (padding included: it is computed), attention scores and values (12 x layers x
    hidden x seq per token), the MLM head (transform + vocabulary projection) on the masked
    positions only (that is all this model computes) and the classification head on [CLS].
    """
    L, H, I, V = config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.vocab_size
    tokens = batch_size * seq_len
    dense = L * (4 * H * H + 2 * H * I)  # Q, K, V, output projections and the feed-forward block
    flops = 6 * dense * tokens + 12 * L * H * seq_len * tokens
    flops += 6 * (H * H + H * V) * masked_tokens
    if task_head:
        flops += 6 * (H * H + H * config.num_labels) * batch_size
    return int(flops)


def paper_flops(parameters: int, tokens: int) -> int:
    """The paper's coarse count: 6 x parameters x training tokens."""
    return 6 * parameters * tokens
