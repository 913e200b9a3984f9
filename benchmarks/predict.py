"""Prediction on new texts: the workflow's `predict` (tlm.predict.predict_files) against
transformers' pipeline() batch inference on the same model, in the same run.

    python benchmarks/predict.py [--model results/export/debian_sections] [--texts 1000000]
        [--pipeline-texts 20000] [--threads 2]

The texts are short documents drawn with replacement from the demo corpus (data/demo/corpus:
dictionary and WordNet entries, package descriptions, man-page paragraphs; median ~25 words).
Without --model (or if it does not exist), a `tiny` model with the demo task's vocabulary and
random weights stands in: the speed does not depend on the weights. Each side runs in its own
process, whose peak RSS is read when it ends; ours runs on 1/10 of the texts too, to show that
memory does not grow with the input. Writes results/bench/predict.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def stand_in_model(out: Path) -> Path:
    """A tiny TLM classifier with the demo task's labels and a WordPiece vocabulary of its texts."""
    from tlm.model import TLMModel, make_config
    from tlm.training.tokenizer import train_tokenizer

    train = pd.read_parquet(ROOT / "data/demo/task/train.parquet")
    labels = sorted(train.label.unique())
    tok = train_tokenizer(train.text, 8000, 2, out / "tok")
    tok.model_max_length = 64
    model = TLMModel(make_config("tiny", len(tok), labels, 64, tok.pad_token_id)).classifier_model()
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    return out / "model"


def run_child(code: str, *args) -> dict:
    """Run `code` in a fresh Python; it prints one JSON line. Adds the child's own peak RSS (MB)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise RuntimeError(f"child failed ({status}): {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1]) | {"peak_rss_mb": usage.ru_maxrss / 1024}


OURS = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from tlm.predict import predict_files
t = time.perf_counter()
n = predict_files(sys.argv[1], [sys.argv[2]], "text", sys.argv[3])
print(json.dumps({"texts": n, "seconds": time.perf_counter() - t}))
"""

PIPELINE = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
import pandas as pd
from transformers import pipeline
texts = pd.read_parquet(sys.argv[2])["text"].tolist()
classify = pipeline("text-classification", model=sys.argv[1], device="cpu")
t = time.perf_counter()
out = classify(texts, truncation=True, batch_size=int(sys.argv[5]))
seconds = time.perf_counter() - t
pd.DataFrame({"label": [o["label"] for o in out]}).to_parquet(sys.argv[3])
print(json.dumps({"texts": len(texts), "seconds": seconds}))
"""


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, default=ROOT / "results/export/debian_sections")
    ap.add_argument("--texts", type=int, default=1_000_000)
    ap.add_argument("--pipeline-texts", type=int, default=20_000)
    ap.add_argument("--pipeline-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/bench/predict.md")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model if (args.model / "config.json").exists() else stand_in_model(tmp)
        corpus = pd.concat(
            pd.read_parquet(p, columns=["text"])
            for p in sorted((ROOT / "data/demo/corpus").glob("*.parquet"))
        )
        rng = np.random.default_rng(0)
        texts = corpus.text.to_numpy()[rng.integers(0, len(corpus), args.texts)]
        words = np.fromiter((t.count(" ") + 1 for t in texts[:100_000]), np.int64)
        for n in (args.texts // 10, args.texts):
            pd.DataFrame({"text": texts[:n]}).to_parquet(tmp / f"in-{n}.parquet")
        pd.DataFrame({"text": texts[: args.pipeline_texts]}).to_parquet(tmp / "in-pipeline.parquet")

        small = run_child(
            OURS, model, tmp / f"in-{args.texts // 10}.parquet", tmp / "small.parquet", args.threads
        )
        ours = run_child(
            OURS, model, tmp / f"in-{args.texts}.parquet", tmp / "ours.parquet", args.threads
        )
        theirs = run_child(
            PIPELINE,
            model,
            tmp / "in-pipeline.parquet",
            tmp / "theirs.parquet",
            args.threads,
            args.pipeline_batch,
        )
        agree = (
            pd.read_parquet(tmp / "ours.parquet", columns=["label"])
            .label.head(args.pipeline_texts)
            .to_numpy()
            == pd.read_parquet(tmp / "theirs.parquet").label.to_numpy()
        ).mean()

    rate = {
        name: r["texts"] / r["seconds"]
        for name, r in (("ours", ours), ("small", small), ("pipeline", theirs))
    }
    lines = [
        f"# Prediction on new texts ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {cpu_name()}, {args.threads} threads. "
        f"Model: {model if model == args.model else 'tiny stand-in (random weights)'}. "
        f"Texts: demo-corpus documents, median {int(np.median(words))} words.",
        "",
        "| | texts | seconds | texts/s | peak RSS (MB) |",
        "|---|---|---|---|---|",
        f"| tlm predict | {ours['texts']:,} | {ours['seconds']:.1f} | {rate['ours']:,.0f} | {ours['peak_rss_mb']:,.0f} |",
        f"| tlm predict, 1/10 of the texts | {small['texts']:,} | {small['seconds']:.1f} | {rate['small']:,.0f} | "
        f"{small['peak_rss_mb']:,.0f} |",
        f"| pipeline(), batch {args.pipeline_batch} | {theirs['texts']:,} | {theirs['seconds']:.1f} | {rate['pipeline']:,.0f} | "
        f"{theirs['peak_rss_mb']:,.0f} |",
        "",
        f"tlm predict runs at **{rate['ours'] / rate['pipeline']:.1f}x** pipeline()'s texts/s; the two agree on "
        f"{100 * agree:.2f}% of the {args.pipeline_texts:,} texts both labelled.",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
