"""Sentence embeddings from a local encoder checkpoint, computed as sentence-transformers computes
them for all-MiniLM-L6-v2 (the `dense` retriever's default, from the `plm` extra): the
transformer's last hidden states, mean-pooled over the real tokens (the checkpoint's
1_Pooling/config.json may ask for [CLS] pooling instead), then L2-normalised, so that an inner
product is a cosine. Texts are encoded in length-sorted batches (little padding) on the GPU when
the job has one (tlm.device), and stored as int8 (x 127, rounded) or float16 (tlm.retrieval.dense).

This module needs torch and transformers (the training environment); tlm.retrieval.dense, which
searches the stored embeddings, needs numpy only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from tlm.config import pretrained_dir
from tlm.device import amp_dtype, autocast, device_name, pick_device
from tlm.io import TLMInputError, read_json
from tlm.retrieval.dense import quantize, write_queries, write_shard

log = logging.getLogger(__name__)

CHUNK = 16_384  # texts tokenized (and length-sorted) at a time
# a tokenizer's vocabulary files (transformers would build an empty tokenizer from a folder without)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model")
SAMPLE = 128  # texts timed before a shard is embedded on a CPU (dense.max_hours)


@dataclass
class Encoder:
    path: Path
    tokenizer: object
    model: torch.nn.Module
    pooling: str  # mean | cls
    max_length: int
    device: torch.device

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


def load_encoder(spec: str, max_length: int | None = None, device=None) -> Encoder:
    """The encoder of `dense.encoder` (a checkpoint directory, or an installed package that ships
    one, resolved as `runs.*.pretrained` is). Errors name the key and the fix."""
    from transformers import AutoModel, AutoTokenizer

    path = pretrained_dir(spec, key="dense.encoder")
    if not (path / "config.json").is_file():
        raise TLMInputError(
            f"dense.encoder = {spec!r}: {path} has no config.json, so it is not a transformers checkpoint. "
            "Fix: point `dense.encoder` at an encoder directory (config.json, weights and tokenizer files), "
            "or install the default with `pip install -e '.[plm]'`."
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise TLMInputError(
            f"dense.encoder = {spec!r}: {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}). "
            "Fix: save the encoder's tokenizer beside it (tokenizer.save_pretrained(path))."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as e:
        raise TLMInputError(
            f"dense.encoder = {spec!r}: no tokenizer could be read from {path} ({e}). "
            "Fix: save the encoder's tokenizer beside it (tokenizer.json or vocab.txt and tokenizer_config.json)."
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise TLMInputError(
            f"dense.encoder = {spec!r}: {path} has no usable (fast) tokenizer. "
            "Fix: save the encoder's tokenizer beside it (tokenizer.json, or vocab.txt for a BERT)."
        )
    try:
        model = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise TLMInputError(
            f"dense.encoder = {spec!r}: {path} holds no loadable encoder weights ({e}). "
            "Fix: point `dense.encoder` at a complete checkpoint."
        ) from None
    pooling = _pooling(path)
    limit = min(int(tokenizer.model_max_length), int(model.config.max_position_embeddings))
    if max_length is None:  # sentence-transformers' own limit for this checkpoint, if it has one
        st = path / "sentence_bert_config.json"
        max_length = read_json(st).get("max_seq_length", limit) if st.exists() else limit
    device = device or pick_device()
    model.to(device).eval()
    return Encoder(path, tokenizer, model, pooling, min(int(max_length), limit), device)


def _pooling(path: Path) -> str:
    """mean, or cls where the checkpoint's sentence-transformers pooling config says so."""
    config = path / "1_Pooling" / "config.json"
    if not config.exists():
        return "mean"
    modes = {k for k, v in read_json(config).items() if k.startswith("pooling_mode_") and v}
    if modes <= {"pooling_mode_mean_tokens"}:
        return "mean"
    if modes == {"pooling_mode_cls_token"}:
        return "cls"
    raise TLMInputError(
        f"dense.encoder: {config} asks for pooling {sorted(modes)}; tlm computes mean or [CLS] pooling only. "
        "Fix: use an encoder with mean or [CLS] pooling."
    )


@torch.inference_mode()
def embed(encoder: Encoder, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts` (rows in their order), in length-sorted batches."""
    out = np.zeros((len(texts), encoder.dim), np.float32)
    dtype = amp_dtype("auto", encoder.device)
    for lo in range(0, len(texts), CHUNK):
        ids = encoder.tokenizer(
            list(texts[lo : lo + CHUNK]),
            truncation=True,
            max_length=encoder.max_length,
            add_special_tokens=True,
        )["input_ids"]
        order = np.argsort([len(i) for i in ids], kind="stable")
        for b in range(0, len(order), batch_size):
            rows = order[b : b + batch_size]
            width = max(len(ids[r]) for r in rows)
            batch = np.full((len(rows), width), encoder.tokenizer.pad_token_id or 0, np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for j, r in enumerate(rows):
                batch[j, : len(ids[r])] = ids[r]
                mask[j, : len(ids[r])] = 1
            batch_t = torch.from_numpy(batch).to(encoder.device)
            mask_t = torch.from_numpy(mask).to(encoder.device)
            with autocast(encoder.device, dtype):
                hidden = encoder.model(input_ids=batch_t, attention_mask=mask_t).last_hidden_state
            hidden = hidden.float()
            if encoder.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                m = mask_t.unsqueeze(-1).float()
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[lo + rows] = pooled.cpu().numpy()
    return out


def check_budget(
    encoder: Encoder, sample: list[str], documents: int, max_hours: float | None, batch_size: int
) -> None:
    """Refuse, before embedding anything, a corpus that would take longer than `dense.max_hours` on
    this job's CPU: the time of a sample of its texts x its documents (a GPU job is not checked)."""
    if max_hours is None or encoder.device.type == "cuda" or not sample:
        return
    embed(encoder, sample[:8], batch_size)  # warm-up: the first batches are slower
    start = time.perf_counter()
    embed(encoder, sample, batch_size)
    rate = len(sample) / (time.perf_counter() - start)
    hours = documents / rate / 3600
    log.info(
        "measured %.1f documents/s on %d of them: the corpus in %.2f h", rate, len(sample), hours
    )
    if hours > max_hours:
        raise TLMInputError(
            f"dense.max_hours = {max_hours}: embedding the corpus's {documents:,} documents on this job's "
            f"CPU ({torch.get_num_threads()} threads) would take about {hours:.1f} h (measured: {rate:.1f} "
            f"documents/s on {len(sample)} of them). Fix: give the job a GPU (`resources.gpu: 1`), raise "
            "`dense.max_hours`, or shorten `dense.max_length`."
        )


def embed_shard(
    shard_path, out_dir, settings: dict, corpus_documents: int, batch_size: int = 64
) -> int:
    """Embed one corpus shard into `out_dir` (tlm.retrieval.dense.write_shard). `settings`: the
    `dense` config (encoder, max_length, dtype, max_hours). Returns the documents embedded."""
    table = pq.read_table(shard_path)
    doc_ids = table.column("doc_id").to_numpy()
    texts = table.column("text").to_pylist()
    if len(doc_ids) and not np.array_equal(
        doc_ids, np.arange(doc_ids[0], doc_ids[0] + len(doc_ids))
    ):
        raise TLMInputError(
            f"{shard_path}: its doc ids are not consecutive. Fix: shard the corpus again."
        )
    encoder = load_encoder(settings["encoder"], settings["max_length"])
    log.info("encoder: %s", describe(encoder))
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), min(SAMPLE, len(texts)), replace=False)]
    check_budget(encoder, sample, corpus_documents, settings["max_hours"], batch_size)
    start = time.perf_counter()
    embeddings = quantize(embed(encoder, texts, batch_size), settings["dtype"])
    seconds = time.perf_counter() - start
    log.info(
        "%s: %d documents in %.1f s (%.1f/s)",
        shard_path,
        len(texts),
        seconds,
        len(texts) / max(seconds, 1e-9),
    )
    write_shard(
        out_dir,
        embeddings,
        {
            **meta(encoder, settings),
            "first_doc_id": int(doc_ids[0]) if len(doc_ids) else 0,
            "seconds": seconds,
        },
    )
    return len(texts)


def embed_queries(texts: list[str], out, settings: dict, batch_size: int = 64) -> None:
    """A task's training texts embedded as the dense retriever's queries (row i = query i)."""
    encoder = load_encoder(settings["encoder"], settings["max_length"])
    log.info("encoder: %s", describe(encoder))
    write_queries(
        out, quantize(embed(encoder, texts, batch_size), settings["dtype"]), meta(encoder, settings)
    )


def meta(encoder: Encoder, settings: dict) -> dict:
    """What identifies the vectors (tlm.retrieval.dense.check_shards compares these)."""
    return {
        "encoder": settings["encoder"],
        "max_length": encoder.max_length,
        "dtype": settings["dtype"],
        "pooling": encoder.pooling,
        "dim": encoder.dim,
    }


def describe(encoder: Encoder) -> str:
    return (
        f"{encoder.path} ({encoder.dim} dims, {encoder.pooling} pooling, max_length {encoder.max_length}) "
        f"on {device_name(encoder.device)}"
    )
