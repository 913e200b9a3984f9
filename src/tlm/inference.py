"""Inference, shared by evaluation (the test split's tokens) and prediction (new texts): a trained
model loaded as plain transformers loads it, class probabilities, and their table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tlm.device import amp_dtype, autocast, pick_device
from tlm.model import load_classifier
from tlm.training.tokenizer import load_tokenizer


def load_model(model_dir, precision: str = "auto"):
    """(model in eval mode on this process's device, its tokenizer, the device, the autocast dtype)."""
    device = pick_device()
    model = load_classifier(model_dir).to(device).eval()
    return model, load_tokenizer(model_dir), device, amp_dtype(precision, device)


@torch.no_grad()
def predict_proba(model, batches, device, dtype=None) -> np.ndarray:
    """Class probabilities (float32) of every example of `batches` (an iterable of batches), in order."""
    was_training = model.training
    model.eval()
    probs = []
    for batch in batches:
        with autocast(device, dtype):
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits
        probs.append(torch.softmax(logits.float(), -1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(probs) if probs else np.zeros((0, model.config.num_labels), np.float32)


@torch.no_grad()
def predict_texts(
    model, tokenizer, texts: list[str], device, dtype=None, batch_size: int = 128
) -> np.ndarray:
    """Class probabilities (float32, one row per text, in order) of `texts`."""
    enc = tokenizer(texts, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]
    lengths = np.fromiter(map(len, enc), np.int64, len(enc))
    order = np.argsort(lengths, kind="stable")
    probs = np.empty((len(texts), model.config.num_labels), np.float32)
    pad = tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids = torch.full((len(idx), int(lengths[idx].max())), pad, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : lengths[i]] = torch.tensor(enc[i])
        mask = torch.arange(ids.shape[1])[None, :] < torch.from_numpy(lengths[idx])[:, None]
        with autocast(device, dtype):
            logits = model(input_ids=ids.to(device), attention_mask=mask.long().to(device)).logits
        probs[idx] = torch.softmax(logits.float(), -1).cpu().numpy()
    return probs


def probabilities(probs, labels: list[str]) -> pd.DataFrame:
    """The predicted label and one float32 probability column per label (prob_<label>)."""
    frame = pd.DataFrame(probs.astype("float32"), columns=[f"prob_{label}" for label in labels])
    frame.insert(0, "label", np.asarray(labels, dtype=object)[probs.argmax(-1)])
    return frame
