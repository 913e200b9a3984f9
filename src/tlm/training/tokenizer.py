"""The task-driven WordPiece tokenizer (learned from T and S), loading a local tokenizer, and the
texts tokenized once for every run to stream."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tlm.io import TLMInputError, atomic_path, read_json
from tlm.tokens import TokenStore
from tlm.wordpiece import learn_vocab, word_counts

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def train_tokenizer(texts, vocab_size: int, min_frequency: int, out_dir) -> PreTrainedTokenizerFast:
    """A lowercased BERT-style WordPiece vocabulary learned from the task and external texts, the
    same in every process (tlm.wordpiece), with canonical ids: specials first, then sorted."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = list(SPECIAL_TOKENS.values())
    vocab = learn_vocab(
        word_counts(texts, tok.normalizer, tok.pre_tokenizer), vocab_size, min_frequency, specials
    )
    ordered = specials + sorted(set(vocab) - set(specials))
    tok.model = models.WordPiece({t: i for i, t in enumerate(ordered)}, unk_token="[UNK]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    with atomic_path(out_dir, is_dir=True) as tmp:
        fast.save_pretrained(tmp)
    return fast


def load_tokenizer(path) -> PreTrainedTokenizerFast:
    """A tokenizer from a local directory (never the hub); MLM needs its [PAD], [CLS], [SEP], [MASK]."""
    if (
        Path(path).is_dir()
        and not any(Path(path).glob("tokenizer*.json"))
        and not (Path(path) / "vocab.txt").exists()
    ):
        raise TLMInputError(
            f"{path}: no tokenizer files in it (tokenizer.json, tokenizer_config.json or vocab.txt; found "
            f"{sorted(p.name for p in Path(path).iterdir())[:10]}). Fix: set `tokenizer.path` to a directory saved "
            "with save_pretrained, or null to train one."
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise TLMInputError(
            f"{path}: not a readable tokenizer directory ({e}). Fix: set `tokenizer.path` to a local "
            "directory saved with save_pretrained, or null to train one."
        ) from None
    missing = [
        name
        for name in ("pad_token", "cls_token", "sep_token", "mask_token")
        if getattr(tok, name) is None
    ]
    if missing:
        raise TLMInputError(
            f"{path}: the tokenizer has no {missing}. Fix: use a BERT-style tokenizer (MLM needs them)."
        )
    return tok


def tokenize_texts(
    tokenizer_dir, parquet, max_seq_length: int, out_dir, labels_json=None, max_rank: int = 0
) -> TokenStore:
    """Tokenize a Parquet file's `text` column once (and map its `label`s) for every run to stream.

    With `max_rank`, only external documents with best_rank <= max_rank are kept: S for a smaller
    K, cut from the task's retrieval without retrieving again.
    """
    import pandas as pd

    columns = ["text", "label"] if labels_json else ["text"]
    df = pd.read_parquet(
        parquet, filters=[("best_rank", "<=", max_rank)] if max_rank else None, columns=columns
    )
    labels = None
    if labels_json:
        label_id = {label: i for i, label in enumerate(read_json(labels_json)["labels"])}
        labels = df["label"].map(label_id).to_numpy()
    store = TokenStore.from_texts(load_tokenizer(tokenizer_dir), df["text"], max_seq_length, labels)
    store.save(out_dir)
    return store
