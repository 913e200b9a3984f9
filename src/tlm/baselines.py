"""Reference baselines beside TLM, evaluated like it on the same splits."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from tlm.io import read_json
from tlm.metrics import classification_metrics


def tfidf_baseline(task_dir, seed: int, grid=(0.3, 1.0, 3.0, 10.0, 30.0)) -> dict:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression, C picked on dev macro-F1:
    cheap, strong on small data, and what many users would try first."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    task_dir = Path(task_dir)
    label_id = {label: i for i, label in enumerate(read_json(task_dir / "labels.json")["labels"])}
    splits = {s: pd.read_parquet(task_dir / f"{s}.parquet") for s in ("train", "dev", "test")}
    y = {s: df["label"].map(label_id).to_numpy() for s, df in splits.items()}
    start = time.perf_counter()
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    x = {"train": vec.fit_transform(splits["train"]["text"])}
    x |= {s: vec.transform(splits[s]["text"]) for s in ("dev", "test")}
    best = None
    for c in grid:
        clf = LogisticRegression(C=c, solver="saga", max_iter=1000, random_state=seed).fit(
            x["train"], y["train"]
        )
        dev = classification_metrics(y["dev"], clf.predict(x["dev"]), len(label_id))
        if best is None or dev["macro_f1"] > best[0]["macro_f1"]:
            best = (dev, clf, c)
    dev, clf, c = best
    test = classification_metrics(y["test"], clf.predict(x["test"]), len(label_id))
    return {
        "kind": "tfidf",
        **{f"test_{k}": v for k, v in test.items()},
        "dev_macro_f1": dev["macro_f1"],
        "C": c,
        "features": int(x["train"].shape[1]),
        "train_seconds": time.perf_counter() - start,
        "train_flops": None,  # not a neural model: no comparable FLOPs count
        "train_tokens": None,
        "external_docs": 0,
        "external_bytes": 0,
        "device": "cpu",
        "test_examples": len(y["test"]),
    }
