"""One owner per default: config/README.md is generated from the schema (and the preset defaults of
tlm.config), and what the schema and the Python code both say about a default agrees."""

import dataclasses
import inspect

import yaml
from conftest import ROOT

from tlm import config as tlm_config
from tlm.config_reference import reference, undocumented

SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())


def test_config_readme_is_generated_from_the_schema():
    assert (ROOT / "config" / "README.md").read_text() == reference(), (
        "config/README.md is out of date: run `PYTHONPATH=src python -m tlm.config_reference > config/README.md`"
    )


def test_every_key_is_described():
    assert undocumented() == []
    text = reference()
    for key in (
        "corpus.paths",
        "tasks.<task>.train",
        "runs.<run>.kind",
        "stage1.rho2",
        "trainer.precision",
        "resources.gpu",
    ):
        assert f"| `{key}` |" in text, key


def schema_defaults() -> dict:
    """A minimal config as validation fills it in: every default the schema gives."""
    cfg = {
        "corpus": {"paths": ["c.jsonl"]},
        "tasks": {"t": {s: f"{s}.csv" for s in ("train", "dev", "test")}},
    }
    return tlm_config.validate_config(cfg)


def python_defaults(obj) -> dict:
    if dataclasses.is_dataclass(obj):
        return {
            f.name: f.default
            for f in dataclasses.fields(obj)
            if f.default is not dataclasses.MISSING
        }
    return {
        name: p.default
        for name, p in inspect.signature(obj).parameters.items()
        if p.default is not p.empty
    }


def described(section: str, key: str) -> str:
    """The description of `key` of one entry of `tasks` or `runs`."""
    return SCHEMA["properties"][section]["additionalProperties"]["properties"][key]["description"]


def test_schema_descriptions_quote_the_python_defaults():
    """Defaults that only the code can compute are owned by tlm.config; the schema's words about them must agree."""
    top_k = tlm_config.AUTO_TOP_K
    assert f"{top_k['hits']:,} / |T|, between {top_k['min']} and {top_k['max']:,}" in described(
        "tasks", "top_k"
    )
    assert f"default: {tlm_config.DEFAULT_PRETRAINED}," in described("runs", "pretrained")
    tiny = tlm_config.PRESET_DEFAULTS["tiny"]
    min_steps = SCHEMA["definitions"]["stage"]["properties"]["min_steps"]["description"]
    assert (
        f"tiny: stage 1 {tiny['stage1']['min_steps']}, stage 2 {tiny['stage2']['min_steps']}"
        in min_steps
    )
    comment = (ROOT / "config" / "schema.yaml").read_text()
    budget = tlm_config.DEFAULT_BUDGET
    assert f"stage 1 goes {budget['stage1']['epochs']} times over T" in comment
    assert f"stage 2 up to {budget['stage2']['epochs']} times over T" in comment


def test_library_defaults_agree_with_the_schema():
    """Where a library function or settings class has a default for a key the schema also defaults,
    the two agree (the schema's is the one every run gets; the code's serves direct callers)."""
    from tlm.keywords import rake_keywords
    from tlm.model import make_config
    from tlm.retrieval.analyzer import Analyzer
    from tlm.settings import StageConfig

    schema = schema_defaults()
    for name, value in python_defaults(Analyzer).items():
        assert value == schema["bm25"][name], f"tlm.retrieval.analyzer.Analyzer.{name}"
    assert python_defaults(rake_keywords)["num_keywords"] == schema["tasks"]["t"]["num_keywords"]
    assert python_defaults(make_config)["dropout"] == schema["model"]["dropout"]
    for name, value in python_defaults(StageConfig).items():
        if name in schema["trainer"]:
            assert value == schema["trainer"][name], f"StageConfig.{name}"
        elif name in schema["stage1"] or name in schema["stage2"]:
            # one class serves both stages: its default is one stage's (rho1, rho2: stage 2's; patience: stage 1's)
            stages = {
                stage: schema[stage][name]
                for stage in ("stage1", "stage2")
                if name in schema[stage]
            }
            assert value in stages.values(), f"StageConfig.{name} = {value!r}, the schema: {stages}"
