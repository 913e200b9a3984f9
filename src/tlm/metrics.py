"""Quality (accuracy, macro/micro F1) and cost (training FLOPs) of a run."""

from __future__ import annotations

import numpy as np

# Dense bf16 (and fp16) tensor-core peaks, FLOP/s, by the name torch reports for the card: MFU is
# taken against these. Sparse figures are twice as high and never reached by a dense transformer.
DENSE_BF16_PEAK = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
}


def classification_metrics(y_true, y_pred, num_labels: int) -> dict[str, float]:
    """Accuracy, macro-F1 (mean over labels present in y_true or y_pred) and micro-F1."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = np.bincount(y_true * num_labels + y_pred, minlength=num_labels**2).reshape(
        num_labels, num_labels
    )
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


def training_flops(
    config, tokens: float, squared: float, masked_tokens: float, task_rows: int
) -> float:
    """Forward + backward FLOPs (3x forward, 2 per multiply-add) of training on rows of `tokens`
    tokens in all, whose lengths squared add up to `squared`.

    Counts every matmul the model runs: the encoder's dense layers on every token, attention scores
    and values (12 x layers x hidden x length per token of a row), the MLM head (transform +
    vocabulary projection) on the masked positions only (that is all this model computes) and the
    classification head on the [CLS] of `task_rows` rows.
    """
    L, H, F, V = (
        config.num_hidden_layers,
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
    )
    dense = L * (4 * H * H + 2 * H * F)  # Q, K, V, output projections and the feed-forward block
    return (
        6 * dense * tokens
        + 12 * L * H * squared
        + 6 * (H * H + H * V) * masked_tokens
        + 6 * (H * H + H * config.num_labels) * task_rows
    )


def step_flops(config, lengths, masked_tokens: int, task_head: bool) -> int:
    """`training_flops` of one step over rows of `lengths`: with each row's own length the work on
    real tokens, with every row at the batch's padded width the work the hardware did."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return int(
        training_flops(
            config,
            int(lengths.sum()),
            int((lengths**2).sum()),
            masked_tokens,
            len(lengths) if task_head else 0,
        )
    )


def paper_flops(parameters: int, tokens: int) -> int:
    """The paper's coarse count: 6 x parameters x training tokens."""
    return 6 * parameters * tokens


def peak_flops(device_name: str, low_precision: bool) -> float | None:
    """The dense bf16/fp16 peak of a known GPU (None elsewhere: MFU is then not reported)."""
    if not low_precision:
        return None
    return next((peak for name, peak in DENSE_BF16_PEAK.items() if name in device_name), None)
