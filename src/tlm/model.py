"""The TLM model: a BERT encoder trained from scratch, with an MLM head and a task head on [CLS].

It is written with transformers' ELECTRA classes, whose parts are exactly the paper's: ELECTRA's
encoder is BERT's layer for layer (with embedding_size = hidden_size there is no projection),
ElectraForSequenceClassification's head is Linear-GELU-Linear on [CLS] (the paper's task head), and
ElectraForMaskedLM's head is BERT's (dense-GELU-LayerNorm, then the vocabulary projection tied to
the embeddings). So every checkpoint loads with plain transformers, no project code and no remote
code: a stage-2 model as `AutoModelForSequenceClassification` (and in `pipeline()`), a stage-1
model also as `AutoModelForMaskedLM`.

Both heads share the encoder; stage 1 uses both losses, stage 2 only the task head (reset, as in
the reference code). The MLM head runs only on masked positions: the vocabulary projection is
the largest matmul of a small model, and unmasked positions have no loss.

The `plm` baseline is a local pretrained checkpoint with its own architecture's standard
classification head (AutoModelForSequenceClassification), fine-tuned like stage 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, ElectraConfig, ElectraForSequenceClassification
from transformers.modeling_outputs import ModelOutput
from transformers.models.electra.modeling_electra import (
    ElectraClassificationHead,
    ElectraGeneratorPredictions,
    ElectraModel,
    ElectraPreTrainedModel,
)

from tlm.io import TLMInputError

# Encoder sizes. `tiny` is for the CPU demo and tests; `small` is BERT-small (Turc et al.);
# `base` (BERT-base, 109M with a 30k vocabulary) is what the paper calls its small and medium
# scale, `large` (BERT-large) its large scale.
PRESETS = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
    "large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
}


def make_config(
    preset: str, vocab_size: int, labels: list[str], max_seq_length: int, pad_token_id: int, dropout: float = 0.1
) -> ElectraConfig:
    """The encoder of `preset` for a vocabulary and the task's labels (their names kept in id2label)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    size = PRESETS[preset]
    return ElectraConfig(
        vocab_size=vocab_size,
        embedding_size=size["hidden_size"],
        max_position_embeddings=max(max_seq_length, 16),
        pad_token_id=pad_token_id,
        hidden_act="gelu",
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **size,
    )


@dataclass
class TLMOutput(ModelOutput):
    logits: torch.Tensor | None = None  # task logits on [CLS]
    mlm_logits: torch.Tensor | None = None  # vocabulary logits at the masked positions only


class TLMModel(ElectraPreTrainedModel):
    """ElectraForSequenceClassification and ElectraForMaskedLM in one: the same module names, so the
    saved weights load into either."""

    _tied_weights_keys = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_lm_head = nn.Linear(config.embedding_size, config.vocab_size)
        self.classifier = ElectraClassificationHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.generator_lm_head

    def reset_classifier(self) -> None:
        for module in self.classifier.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, input_ids, attention_mask, mlm_labels=None) -> TLMOutput:
        """Task logits on [CLS]; MLM logits at the positions where mlm_labels != -100, if given."""
        hidden = self.electra(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mlm_logits = None
        if mlm_labels is not None:
            mlm_logits = self.generator_lm_head(self.generator_predictions(hidden[mlm_labels != -100]))
        return TLMOutput(logits=self.classifier(hidden), mlm_logits=mlm_logits)

    def classifier_model(self) -> ElectraForSequenceClassification:
        """The task model alone, as transformers' own class (the MLM head dropped): what stage 2 saves."""
        model = ElectraForSequenceClassification(self.config)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("generator_")}
        model.load_state_dict(state)
        return model


def load_classifier(path, **kwargs):
    """A trained model directory as plain transformers loads it (any architecture: TLM or plm)."""
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True, **kwargs)
    except OSError as e:
        raise checkpoint_error(path, e) from None


def checkpoint_error(path, e: Exception) -> TLMInputError:
    """A checkpoint folder without its weights (or config): one of the workflow's is rebuilt once it
    is deleted (Snakemake counts a folder that exists as done, however incomplete)."""
    if "results" in Path(path).parts:
        fix = f"delete the folder {path} and run snakemake again: it is rebuilt, with what depends on it"
    else:
        fix = "give a complete checkpoint directory (config.json and weights, as save_pretrained writes them)"
    return TLMInputError(f"{path}: not a complete model checkpoint ({str(e).splitlines()[0]}). Fix: {fix}.")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """All parameters (shared ones once) and the non-embedding ones (the 6N of the FLOPs rule)."""
    params = {id(p): (n, p.numel()) for n, p in model.named_parameters()}
    total = sum(n for _, n in params.values())
    embed = sum(n for name, n in params.values() if ".embeddings." in f".{name}")
    return {"total": total, "non_embedding": total - embed}
