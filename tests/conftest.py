import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="session")
def demo_corpus_texts() -> list[str]:
    """The first few thousand documents of the shipped demo corpus (real text)."""
    first = sorted((DEMO / "corpus").glob("*.parquet"))[0]
    return pd.read_parquet(first, columns=["text"])["text"].head(3000).tolist()


@pytest.fixture(scope="session")
def demo_task() -> dict[str, pd.DataFrame]:
    return {split: pd.read_parquet(DEMO / "task" / f"{split}.parquet") for split in ("train", "dev", "test")}


def python() -> str:
    return sys.executable
