"""Training throughput: tokens/s and model FLOPs utilization (MFU) of tlm's training step.

For each preset (default: tiny and base) at sequence length 128, the real training loop
(tlm.training.loop.train_stage, MLM on external batches) runs on synthetic full-length batches, first as a
plain HuggingFace-style step, then with each optimization switched on in turn:

  plain       eager attention, MLM logits at every position, fp32
  +sdpa       PyTorch scaled-dot-product attention
  +masked     MLM logits only at the masked positions (what tlm does)
  +bf16       bf16 autocast (GPU only; fused AdamW is on wherever CUDA is)
  +compile    torch.compile (opt-in: --compile, it takes a while to compile; widths padded to 8)

then on sequences with the demo corpus's length distribution (the padding real batches carry):

  demo lengths          length-bucketed batches, as tlm draws its external batches
  demo lengths, packed  several documents per row (stage1.pack_external): next to no padding

Tokens and FLOPs count real (non-padding) tokens only (tlm.metrics.step_flops: 6 x dense +
attention + heads at each row's own length), so padding never flatters a variant. MFU = those
FLOPs per second / the peak: on CPU a large fp32 matmul measured in the same run, on GPU the
card's dense bf16 peak (and the measured bf16 matmul beside it). "batch wait" is the share of the
time the step waited for its batch (drawing, masking, copying to the device).

    python benchmarks/train_throughput.py [--presets tiny base] [--steps 6] [--compile]

Writes results/bench/train_throughput.md.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch
from common import DEMO, cpu_name

from tlm.metrics import DENSE_BF16_PEAK
from tlm.model import PRESETS, TLMModel, TLMOutput, make_config
from tlm.settings import StageConfig
from tlm.tokens import TRAIN_BUCKET, Batches, TokenStore
from tlm.training.loop import StageData, train_stage

VOCAB = 30522
SEQ = 128


class Tokenizer:
    """What train_stage needs of a tokenizer: special ids and the vocabulary size (BERT's)."""

    pad_token_id, mask_token_id, sep_token_id, all_special_ids = (
        0,
        103,
        102,
        [0, 100, 101, 102, 103],
    )

    def __len__(self):
        return VOCAB


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def peak_flops(device: torch.device) -> tuple[float, str]:
    """Measured matmul FLOP/s (fp32 on CPU, bf16 on GPU) and the peak MFU is taken against."""
    n = 4096 if device.type == "cuda" else 2048
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (
        torch.randn(n, n, device=device, dtype=dtype),
        torch.randn(n, n, device=device, dtype=dtype),
    )
    for _ in range(3):
        a @ b
    reps = 50 if device.type == "cuda" else 10
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    measured = 2 * n**3 * reps / (time.perf_counter() - t)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in DENSE_BF16_PEAK.items() if k in name), measured)
        return (
            peak,
            f"dense bf16 peak {peak / 1e12:.0f} TFLOP/s (measured bf16 matmul {measured / 1e12:.0f})",
        )
    return measured, f"measured fp32 matmul {measured / 1e9:.0f} GFLOP/s"


def full_vocab_forward(self, input_ids, attention_mask, mlm_labels=None):
    """The plain HF way: vocabulary logits at every position, then the masked ones picked."""
    hidden = self.electra(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mlm = (
        self.generator_lm_head(self.generator_predictions(hidden))[mlm_labels != -100]
        if mlm_labels is not None
        else None
    )
    return TLMOutput(logits=self.classifier(hidden), mlm_logits=mlm)


def demo_lengths(n: int, rng) -> np.ndarray:
    """Sequence lengths as the demo corpus's documents have them (words x 1.3 WordPiece tokens, plus
    [CLS] and [SEP], cut at SEQ): the padding real MLM batches carry."""
    words = np.concatenate(
        [
            pd.read_parquet(p, columns=["text"]).text.str.count(" ").to_numpy() + 1
            for p in sorted((DEMO / "corpus").glob("*.parquet"))
        ]
    )
    return np.minimum(np.round(rng.choice(words, n) * 1.3).astype(int) + 2, SEQ)


def measure(
    preset: str,
    batch: int,
    steps: int,
    attn: str,
    masked: bool,
    precision: str,
    compile_: bool,
    lengths: str,
    pack: bool = False,
) -> dict:
    """Real (non-padding) tokens/s and FLOP/s of the training step, and the padding share."""
    rng = np.random.default_rng(0)
    n = batch * (steps + 2) * (8 if pack else 2)
    sizes = np.full(n, SEQ) if lengths == "full" else demo_lengths(n, rng)
    offsets = np.r_[0, np.cumsum(sizes)]
    ids = rng.integers(1000, VOCAB, int(offsets[-1]), dtype=np.int32)
    ids[offsets[:-1]], ids[offsets[1:] - 1] = 101, 102
    store = TokenStore(ids, offsets, np.zeros(n, dtype=np.int64))
    torch.manual_seed(0)
    cfg = make_config(preset, VOCAB, ["a", "b"], SEQ, 0)
    cfg._attn_implementation = attn
    model = TLMModel(cfg)
    warm = 2
    stage = StageConfig(
        max_steps=warm + steps,
        batch_size=batch,
        learning_rate=1e-4,
        rho1=10**9,
        precision=precision,
        compile=compile_,
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(TLMModel, "forward", TLMModel.forward if masked else full_vocab_forward),
    ):
        log = Path(tmp) / "log.csv"
        tok = Tokenizer()
        external = Batches(
            store, batch, 0, 1, bucket=TRAIN_BUCKET, max_len=SEQ, sep_id=102, pack=pack
        )
        train_stage(
            model,
            stage,
            StageData(tok, Batches(store, batch, 0, 0), external),
            log,
            keep_best=False,
        )
        with open(log) as fh:
            rows = list(csv.DictReader(fh))
    a, b = rows[warm - 1], rows[-1]
    seconds = float(b["seconds"]) - float(a["seconds"])
    tokens, padded = (
        int(b["tokens"]) - int(a["tokens"]),
        int(b["padded_tokens"]) - int(a["padded_tokens"]),
    )
    return {
        "tokens_per_s": tokens / seconds,
        "flops_per_s": (int(b["flops"]) - int(a["flops"])) / seconds,
        "padding": 1 - tokens / padded,
        "wait": (float(b["data_seconds"]) - float(a["data_seconds"])) / seconds,
    }


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument(
        "--batch",
        type=int,
        default=0,
        help="sequences per step (default: 32 on GPU/tiny, 8 for base on CPU)",
    )
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", default="results/bench/train_throughput.md")
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak, peak_text = peak_flops(device)
    low = "auto" if device.type == "cuda" else "fp32"
    variants = [  # name, attention, MLM at masked positions only, precision, compile, lengths, packed
        ("plain", "eager", False, "fp32", False, "full", False),
        ("+sdpa", "sdpa", False, "fp32", False, "full", False),
        ("+masked", "sdpa", True, "fp32", False, "full", False),
    ]
    if device.type == "cuda":
        variants.append(("+bf16", "sdpa", True, "auto", False, "full", False))
    if args.compile:
        variants.append(("+compile", "sdpa", True, "auto", True, "full", False))
    # the demo's real lengths: bucketed batches (the default), then packed rows (stage1.pack_external)
    variants += [
        ("demo lengths", "sdpa", True, low, args.compile, "demo", False),
        ("demo lengths, packed", "sdpa", True, low, args.compile, "demo", True),
    ]
    lines = [
        f"# Training throughput (max length {SEQ}, vocab {VOCAB}); tokens and FLOPs count real (non-padding) tokens",
        "",
        f"Machine: {machine()}; {peak_text}.",
        "",
        "| preset | variant | batch | real tokens/s | model TFLOP/s | MFU | padding | batch wait | vs plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in args.presets:
        batch = args.batch or (8 if preset in ("base", "large") and device.type == "cpu" else 32)
        base = None
        for name, attn, masked, precision, comp, lengths, pack in variants:
            r = measure(preset, batch, args.steps, attn, masked, precision, comp, lengths, pack)
            base = base or r["tokens_per_s"]
            lines.append(
                f"| {preset} | {name} | {batch} | {r['tokens_per_s']:.0f} | {r['flops_per_s'] / 1e12:.3f} | "
                f"{100 * r['flops_per_s'] / peak:.1f}% | {100 * r['padding']:.1f}% | {100 * r['wait']:.1f}% | "
                f"{r['tokens_per_s'] / base:.2f}x |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
