"""Typed settings, built once from the validated config: what one training stage of one run reads.

Every default has one owner. A key's default is config/schema.yaml's (validation fills it in); the
model preset's batch size, learning rate, warm-up and floor are tlm.config.PRESET_DEFAULTS, and
the budget of a stage that sets none is tlm.config.DEFAULT_BUDGET. The dataclasses below take
their defaults from the schema (tests/test_config.py checks them, and the README's example,
against it), so building one directly (tests, benchmarks) gives what the workflow would.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

# Shipped inside the package (config/schema.yaml is a link to it), so an installed tlm reads it too.
SCHEMA_PATH = Path(__file__).with_name("schema.yaml")


@functools.cache
def schema_defaults(schema_path: str | Path = SCHEMA_PATH) -> dict[str, dict]:
    """The defaults validation fills in, per section of the config: {section: {key: default}}."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    return {
        name: {
            key: spec["default"]
            for key, spec in section.get("properties", {}).items()
            if "default" in spec
        }
        for name, section in schema["properties"].items()
    }


# A stage's defaults: stage 2's (a stage without external data), and stage 1's for the keys only
# stage 1 reads (external_epochs, pack_external), with the trainer's.
_STAGE = {
    **schema_defaults()["stage1"],
    **schema_defaults()["stage2"],
    **schema_defaults()["trainer"],
}
_MODEL = schema_defaults()["model"]


@dataclass(frozen=True)
class StageConfig:
    """Every hyperparameter of one training stage (names follow HF run_mlm.py where they exist);
    the meaning of each is in config/schema.yaml."""

    batch_size: int  # sequences per optimizer step, over all processes and micro-batches
    learning_rate: float
    max_steps: int | None = (
        None  # the budget: max_steps, epochs or flops (plan_stage turns it into steps)
    )
    epochs: float | None = None
    flops: float | None = None
    weight_decay: float = _STAGE["weight_decay"]
    warmup_steps: int | None = None  # None: warmup_ratio of the steps
    warmup_ratio: float = 0.0  # the workflow's: the preset's (PRESET_DEFAULTS)
    rho1: int | None = _STAGE["rho1"]  # None: from the data (plan_stage)
    external_epochs: float = _STAGE[
        "external_epochs"
    ]  # rho1 None: passes over S per `epochs` passes over T
    min_steps: int = 0  # floor of an epochs budget; the workflow's: the preset's
    rho2: float = _STAGE["rho2"]
    mlm_probability: float = _STAGE["mlm_probability"]
    max_grad_norm: float = _STAGE["max_grad_norm"]
    eval_steps: int | None = _STAGE[
        "eval_steps"
    ]  # dev evaluation every N steps (0: only at the end; None: ten)
    pack_external: bool = _STAGE[
        "pack_external"
    ]  # several documents per external MLM row (tlm.tokens.Batches)
    patience: int = _STAGE[
        "patience"
    ]  # stop after this many evaluations without a better dev macro-F1 (0: never)
    gradient_accumulation_steps: int = _STAGE["gradient_accumulation_steps"]
    save_steps: int = _STAGE["save_steps"]  # resumable checkpoint every N steps (0: none)
    save_total_limit: int = _STAGE["save_total_limit"]
    precision: str = _STAGE[
        "precision"
    ]  # auto (bf16 on GPUs that have it, else fp16; fp32 on CPU), fp32, bf16, fp16
    compile: bool = _STAGE["compile"]  # torch.compile the model
    require_gpu: bool = _STAGE[
        "require_gpu"
    ]  # fail, instead of warning, when a GPU was requested and there is none
    prefetch: int | None = _STAGE[
        "prefetch"
    ]  # batches prepared ahead (None: 2 on a GPU, 0 on the CPU)
    pad_to_multiple_of: int | None = _STAGE[
        "pad_to_multiple_of"
    ]  # row widths (None: 8 with compile, else 1)
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    preset: str = _MODEL["preset"]
    max_seq_length: int = _MODEL["max_seq_length"]
    dropout: float = _MODEL["dropout"]


@dataclass(frozen=True)
class StageSettings:
    """One stage of one run, typed, built once (`from_params`) from the rule's params: a dict of
    tlm.config.run_settings() (model, stage1/stage2, trainer, seed, external, pretrained). `params`
    keeps that dict as it came: the resumable checkpoints' fingerprint and the stage's record."""

    stage: str
    model: ModelConfig
    train: StageConfig
    seed: int
    pretrained: str | None
    params: dict

    @classmethod
    def from_params(cls, stage: str, params: dict) -> StageSettings:
        train = StageConfig(**params[stage], **params.get("trainer", {}), seed=params["seed"])
        return cls(
            stage,
            ModelConfig(**params["model"]),
            train,
            params["seed"],
            params.get("pretrained"),
            params,
        )


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]
