"""What the benchmark scripts share: the name of the machine they measured, the demo's sentences."""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor(),
    )


def snakemake_cmd(cores: int, *args: str) -> list[str]:
    """The workflow's command line in this interpreter, with `cores`; `args` follow."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--cores",
        str(cores),
        *args,
    ]


def demo_sentences() -> tuple[np.ndarray, np.ndarray]:
    """Every sentence of the demo corpus, and how many each document has (synthetic documents of
    real sentences, as many as a real document has, keep the corpus's word frequencies)."""
    texts = pd.concat(
        [pd.read_parquet(p, columns=["text"]) for p in sorted((DEMO / "corpus").glob("*.parquet"))]
    )["text"]
    per_doc = [SENTENCE_END.split(t) for t in texts]
    return np.array([s for doc in per_doc for s in doc], dtype=object), np.array(
        [len(doc) for doc in per_doc]
    )
