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
classification head (AutoModelForSequenceClassification), fine-tuned like stage 2. A tlm run with
`pretrained` starts stage 1 from such a checkpoint instead (PretrainedTLM): the architecture's own
classification and MLM heads on one shared encoder, saved so that the stage-1 directory loads as
both AutoModelForSequenceClassification and AutoModelForMaskedLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
)
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
    "tiny": dict(
        num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512
    ),
    "small": dict(
        num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048
    ),
    "base": dict(
        num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072
    ),
    "large": dict(
        num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096
    ),
}


def make_config(
    preset: str,
    vocab_size: int,
    labels: list[str],
    max_seq_length: int,
    pad_token_id: int,
    dropout: float = 0.1,
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
            mlm_logits = self.generator_lm_head(
                self.generator_predictions(hidden[mlm_labels != -100])
            )
        return TLMOutput(logits=self.classifier(hidden), mlm_logits=mlm_logits)

    def classifier_model(self) -> ElectraForSequenceClassification:
        """The task model alone, as transformers' own class (the MLM head dropped): what stage 2 saves."""
        model = ElectraForSequenceClassification(self.config)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("generator_")}
        model.load_state_dict(state)
        return model


# The MLM head of each supported architecture's ForMaskedLM class: its modules, applied in this
# order to the encoder's last hidden states.
MLM_HEADS = {
    "bert": ("cls",),
    "roberta": ("lm_head",),
    "xlm-roberta": ("lm_head",),
    "electra": ("generator_predictions", "generator_lm_head"),
}


class PretrainedTLM(nn.Module):
    """Stage 1 from a pretrained checkpoint: the checkpoint's AutoModelForSequenceClassification
    (a new task head) and its AutoModelForMaskedLM on ONE encoder, with the forward of TLMModel.

    The MLM head is the checkpoint's if it has one; a checkpoint saved without it (a bare encoder,
    as sentence-transformers ships all-MiniLM-L6-v2) gets the architecture's head newly initialised
    (for BERT: dense-GELU-LayerNorm, the vocabulary projection tied to the pretrained embeddings);
    `new_mlm_head` says which.
    """

    def __init__(self, path, labels: list[str]):
        super().__init__()
        self.classifier = load_classifier(path, **label_maps(labels))
        model_type = self.classifier.config.model_type
        if model_type not in MLM_HEADS:
            raise TLMInputError(
                f"{path}: a {model_type!r} checkpoint, whose MLM head TLM's stage 1 does not know. "
                f"Fix: use a checkpoint of {sorted(MLM_HEADS)}, or a kind: plm run (fine-tuning only)."
            )
        self.mlm, info = AutoModelForMaskedLM.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True
        )
        prefix = self.mlm.base_model_prefix
        shared = getattr(self.classifier, prefix)
        for name, module in getattr(self.mlm, prefix).named_children():
            setattr(
                shared, name, module
            )  # one encoder; the MLM decoder stays tied to these embeddings
        self.heads = MLM_HEADS[model_type]
        self.new_mlm_head = any(key.split(".")[0] in self.heads for key in info["missing_keys"])
        self.config = self.classifier.config

    def forward(self, input_ids, attention_mask, mlm_labels=None) -> TLMOutput:
        out = self.classifier(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        mlm_logits = None
        if mlm_labels is not None:  # the head on the masked positions only, as TLMModel
            mlm_logits = out.hidden_states[-1][mlm_labels != -100]
            for name in self.heads:
                mlm_logits = getattr(self.mlm, name)(mlm_logits)
        return TLMOutput(logits=out.logits, mlm_logits=mlm_logits)

    def save_pretrained(self, out_dir) -> None:
        """One safetensors file with both models' weights (the shared encoder once, tied weights
        left to transformers to re-tie) and the classifier's config naming both classes."""
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        state = {**self.mlm.state_dict(), **self.classifier.state_dict()}
        for key, target in (self.mlm._tied_weights_keys or {}).items():
            if (
                key in state
                and target in state
                and state[key].data_ptr() == state[target].data_ptr()
            ):
                del state[key]
        tensors = {k: v.detach().contiguous() for k, v in state.items()}
        save_file(tensors, str(Path(out_dir) / "model.safetensors"), metadata={"format": "pt"})
        self.config.architectures = [type(self.mlm).__name__, type(self.classifier).__name__]
        self.config.save_pretrained(out_dir)


def label_maps(labels: list[str]) -> dict:
    """A classifier's label arguments for from_pretrained: the task's label names, in id order."""
    return dict(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def reset_head(model) -> None:
    """A fresh task head on a transformers classifier (its layers outside the encoder), as
    TLMModel.reset_classifier: stage 2 starts with one, as the reference code does."""
    for name, child in model.named_children():
        for module in child.modules() if name != model.base_model_prefix else ():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def load_classifier(path, **kwargs):
    """A trained model directory as plain transformers loads it (any architecture: TLM or plm)."""
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, **kwargs
        )
    except OSError as e:
        raise checkpoint_error(path, e) from None


def checkpoint_error(path, e: Exception) -> TLMInputError:
    """A checkpoint folder without its weights (or config): one of the workflow's is rebuilt once it
    is deleted (Snakemake counts a folder that exists as done, however incomplete)."""
    if "results" in Path(path).parts:
        fix = f"delete the folder {path} and run snakemake again: it is rebuilt, with what depends on it"
    else:
        fix = "give a complete checkpoint directory (config.json and weights, as save_pretrained writes them)"
    return TLMInputError(
        f"{path}: not a complete model checkpoint ({str(e).splitlines()[0]}). Fix: {fix}."
    )


def count_parameters(model: nn.Module) -> dict[str, int]:
    """All parameters (shared ones once) and the non-embedding ones (the 6N of the FLOPs rule)."""
    params = {id(p): (n, p.numel()) for n, p in model.named_parameters()}
    total = sum(n for _, n in params.values())
    embed = sum(n for name, n in params.values() if ".embeddings." in f".{name}")
    return {"total": total, "non_embedding": total - embed}
