"""The TLM model: a BERT encoder trained from scratch, with an MLM head and a task head on [CLS].

Both heads share the encoder; stage 1 uses both losses, stage 2 only the task head (reset, as in
the reference code). The MLM head runs only on masked positions: the vocabulary projection is
the largest matmul of a small model, and unmasked positions have no loss.

`PLMModel` is the `plm` baseline: a local pretrained encoder with the same task head, fine-tuned
like stage 2.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, BertPreTrainedModel, PreTrainedModel
from transformers.models.bert.modeling_bert import BertOnlyMLMHead


# Encoder sizes. `tiny` is for the CPU demo and tests; `small` is BERT-small (Turc et al.);
# `base` (BERT-base, 109M with a 30k vocabulary) is what the paper calls its small and medium
# scale, `large` (BERT-large) its large scale.
PRESETS = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
}


def make_config(preset: str, vocab_size: int, num_labels: int, max_seq_length: int, pad_token_id: int, dropout: float = 0.1) -> BertConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    return BertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max(max_seq_length, 16),
        num_labels=num_labels,
        pad_token_id=pad_token_id,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **PRESETS[preset],
    )


def task_head(config) -> nn.Sequential:
    """Linear-GELU-Linear, the paper's classification head."""
    h, p = config.hidden_size, config.hidden_dropout_prob
    return nn.Sequential(nn.Dropout(p), nn.Linear(h, h), nn.GELU(), nn.Dropout(p), nn.Linear(h, config.num_labels))


class TLMModel(BertPreTrainedModel):
    _tied_weights_keys = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.classifier = task_head(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def reset_classifier(self) -> None:
        for module in self.classifier.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, input_ids, attention_mask, mlm_labels=None):
        """(MLM logits at the positions where mlm_labels != -100, or None; task logits on [CLS])."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.classifier(hidden[:, 0])
        mlm_logits = self.cls(hidden[mlm_labels != -100]) if mlm_labels is not None else None
        return mlm_logits, logits


class PLMModel(PreTrainedModel):
    """A pretrained encoder (any local AutoModel checkpoint) with `task_head` on the mean of its
    token states: the pooling sentence encoders such as all-MiniLM-L6-v2 were trained with.

    `PLMModel.from_pretrained(encoder_dir, num_labels=n)` loads the encoder's weights and starts a
    fresh head; a fine-tuned model saves and loads like any transformers model.
    """

    config_class = AutoConfig
    base_model_prefix = "plm"

    def __init__(self, config):
        super().__init__(config)
        self.plm = AutoModel.from_config(config)
        self.classifier = task_head(config)
        self.post_init()

    def forward(self, input_ids, attention_mask, mlm_labels=None):
        """(None: no MLM head; task logits on the masked mean of the last hidden states)."""
        hidden = self.plm(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return None, self.classifier((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))


def load_model(path) -> TLMModel | PLMModel:
    """A trained model directory, whichever of the two classes saved it."""
    architectures = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    return (PLMModel if "PLMModel" in architectures else TLMModel).from_pretrained(path)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """All parameters (shared ones once) and the non-embedding ones (the 6N of the FLOPs rule)."""
    params = {id(p): (n, p.numel()) for n, p in model.named_parameters()}
    total = sum(n for _, n in params.values())
    embed = sum(n for name, n in params.values() if ".embeddings." in f".{name}")
    return {"total": total, "non_embedding": total - embed}
