import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="session")
def demo_corpus_texts() -> list[str]:
    """The first few thousand documents of the shipped demo corpus (real text)."""
    first = sorted((DEMO / "corpus").glob("*.parquet"))[0]
    return pd.read_parquet(first, columns=["text"])["text"].head(3000).tolist()


@pytest.fixture(scope="session")
def demo_task() -> dict[str, pd.DataFrame]:
    return {
        split: pd.read_parquet(DEMO / "task" / f"{split}.parquet")
        for split in ("train", "dev", "test")
    }


def python() -> str:
    return sys.executable


SNAKEMAKE = [
    sys.executable,
    "-m",
    "snakemake",
    "--snakefile",
    str(ROOT / "Snakefile"),
    "--cores",
    "2",
]


def tiny_config(tmp):
    """A few thousand real documents in two formats and 15 labels x (8, 3, 3) task examples."""
    corpus = pd.read_parquet(sorted((DEMO / "corpus").glob("*.parquet"))[0], columns=["text"]).head(
        2500
    )
    (tmp / "corpus").mkdir()
    corpus.head(2000).to_parquet(tmp / "corpus" / "a.parquet")
    with gzip.open(tmp / "corpus" / "b.jsonl.gz", "wt") as f:
        for text in corpus.text.iloc[2000:]:
            f.write(json.dumps({"text": text}) + "\n")
    (tmp / "task").mkdir()
    for split, n in (("train", 8), ("dev", 3), ("test", 3)):
        pd.read_parquet(DEMO / "task" / f"{split}.parquet").groupby("label").head(n).to_parquet(
            tmp / "task" / f"{split}.parquet"
        )
    # new texts to label: the test split's, as a CSV without labels and as JSON lines
    test = pd.read_parquet(tmp / "task" / "test.parquet")
    test[["text"]].head(30).to_csv(tmp / "task" / "new.csv", index=False)
    test[["text"]].iloc[30:].to_json(tmp / "task" / "new.jsonl", orient="records", lines=True)
    config = {
        "corpus": {"paths": ["corpus/*.parquet", "corpus/b.jsonl.gz"], "shard_size": 900},
        "bm25": {"stemmer": "english"},
        "tasks": {
            "demo": {
                **{s: f"task/{s}.parquet" for s in ("train", "dev", "test")},
                "query_mode": "keywords",
                "top_k": 5,
                "predict": ["task/new.csv", "task/new.jsonl"],
                "language": "en",  # the model cards' language (their licence: `other`, the default)
            }
        },
        "tokenizer": {"vocab_size": 500},
        "model": {"preset": "tiny", "max_seq_length": 48},
        "stage1": {
            "max_steps": 8,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "warmup_steps": 2,
            "rho1": 1,
            "rho2": 5,
            "save_steps": 2,
        },
        "stage2": {
            "max_steps": 4,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "warmup_steps": 1,
            "eval_steps": 2,
        },
        "seeds": [0],
        "runs": {
            "tlm": {"external": "bm25"},
            "task_only": {"external": "none"},
            "random": {"external": "random"},
            "no_stage2": {"external": "bm25", "skip_stage2": True},
            "tlm_k2": {"external": "bm25", "top_k": 2},
            "tfidf": {"kind": "tfidf"},
            "plm": {
                "kind": "plm",
                "pretrained": str(tiny_pretrained_encoder(tmp / "encoder")),
                "pretraining": "none (random)",
            },
        },
    }
    write_config(tmp, config)
    return config


def tiny_pretrained_encoder(path):
    """A stand-in for a pretrained checkpoint (the real one is an optional extra): a tiny BERT and a
    character-level WordPiece vocabulary, saved as transformers saves any checkpoint."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir()
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    (path / "vocab.txt").write_text(
        "\n".join(
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
        )
    )
    tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"))
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)  # the same stand-in in every workflow of the tests
    BertModel(config).save_pretrained(path)
    return path


def write_config(tmp, config):
    (tmp / "config.yaml").write_text(
        yaml.safe_dump(config, sort_keys=False)
    )  # keep the runs' order


def smk(tmp, *args, check=True, env=None):
    # targets and flags first: --configfile takes every argument after it
    proc = subprocess.run(
        [*SNAKEMAKE, *args, "--directory", str(tmp), "--configfile", str(tmp / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-5000:])
    return proc


@pytest.fixture(scope="session")
def done(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wf")
    config = tiny_config(tmp)
    # TLM from a pretrained checkpoint (only here: the other workflows of the tests need not train it)
    config["runs"]["plm_tlm"] = {
        "external": "bm25",
        "pretrained": str(tmp / "encoder"),
        "pretraining": "none (random)",
    }
    write_config(tmp, config)
    smk(tmp)
    return tmp
