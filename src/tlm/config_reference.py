"""config/README.md, generated from config/schema.yaml: every key, its type, default and meaning.

`python -m tlm.config_reference > config/README.md` writes it; a test checks that the committed file
is what this writes, so the reference never drifts from the schema (the one place a key is defined).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tlm import config as tlm_config
from tlm.config import SCHEMA_PATH

INTRO = """\
# Configuration

<!-- Generated from config/schema.yaml by `python -m tlm.config_reference > config/README.md`; edit the schema, not this file. -->

`snakemake` alone runs the embedded demo, `config/config.yaml`; `snakemake --configfile my.yaml` runs
exactly `my.yaml` (several files are merged in their order). Start from `config/config.yaml`; the
other files here are presets: `paper.yaml` (the paper's setup, for GPUs and its datasets),
`ablations.yaml`, `budgets.yaml`, `tasks.yaml` and `plm_tlm.yaml` (the experiments of the README).
`python -m tlm.config my.yaml` checks a file as the workflow will.

Every key below is validated against `config/schema.yaml` when the workflow starts: an unknown key
(a typo), a wrong type or a value out of range stops it with a message naming the key. A key left
out takes its default; "-" means none (the key is optional, and the description says what happens
without it). `<task>` and `<run>` are names you choose: letters, digits, `_`, `.` and `-`.
"""


def _resolve(schema: dict, node: dict) -> dict:
    """`node` with its `$ref` (a definition) merged under its own keys."""
    if "$ref" not in node:
        return node
    target = schema
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    merged = {
        **_resolve(schema, target),
        **{k: v for k, v in node.items() if k not in ("$ref", "properties")},
    }
    if "properties" in merged:  # a top-level section refines its definition's keys (their defaults)
        refined = node.get("properties", {})
        merged["properties"] = {
            k: {**v, **refined.get(k, {})} for k, v in merged["properties"].items()
        }
    return merged


def _type(node: dict) -> str:
    if "const" in node:
        return f"`{json.dumps(node['const'])}` (fixed)"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    types = node.get("type", "object")
    types = types if isinstance(types, list) else [types]
    text = " or ".join(
        "null"
        if t == "null"
        else f"list of {node['items'].get('type', 'value')}"
        if t == "array"
        else t
        for t in types
    )
    bounds = [
        f"{sign} {node[key]}"
        for key, sign in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in node
    ]
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _default(node: dict, required: bool) -> str:
    if required:
        return "required"
    if "default" not in node:
        return "-"
    value = node["default"]
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(schema: dict, node: dict, prefix: str, sections: list) -> list[str]:
    """Table rows of `node`'s keys; an object that is itself a set of keys becomes a section of its own."""
    rows = []
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        key = f"{prefix}{name}"
        description = sub.get("description")
        ref = "$ref" in sub
        sub = _resolve(schema, sub)
        if (
            ref and prefix
        ):  # a task's or run's overrides of a top-level section: its keys are listed there
            rows.append(
                f"| `{key}` | object | - | {_cell(description or '')}: any key of [`{name}`](#{name}) |"
            )
            continue
        rows.append(
            f"| `{key}` | {_type(sub)} | {_default(sub, name in required)} | {_cell(description or '')} |"
        )
        if "properties" in sub:
            sections.append((key, sub))
    return rows


def _section(schema: dict, key: str, node: dict, sections: list) -> list[str]:
    lines = [f"## `{key}`", ""]
    if node.get("description"):
        lines += [node["description"], ""]
    lines += [
        "| key | type | default | description |",
        "|---|---|---|---|",
        *_rows(schema, node, f"{key}.", sections),
        "",
    ]
    return lines


def reference(schema_path: str | Path = SCHEMA_PATH) -> str:
    """The Markdown reference of every key of the schema at `schema_path`."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    lines = [
        INTRO,
        "## Top level",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    sections: list = []
    lines += _rows(schema, schema, "", sections)
    lines.append("")
    while sections:
        key, node = sections.pop(0)
        lines += _section(schema, key, node, sections)
    # the keys of tasks.<task> and runs.<run>: one entry of a name -> settings mapping
    for key, placeholder in (("tasks", "<task>"), ("runs", "<run>")):
        entry = schema["properties"][key]["additionalProperties"]
        lines += _section(schema, f"{key}.{placeholder}", entry, sections)
    lines += _preset_defaults()
    return "\n".join(lines).rstrip() + "\n"


def _preset_defaults() -> list[str]:
    """The stage defaults the library sets (tlm.config, their one owner) where the schema has none."""
    keys = sorted(
        {k for stages in tlm_config.PRESET_DEFAULTS.values() for v in stages.values() for k in v}
    )
    budget = "; ".join(
        f"`{stage}`: {', '.join(f'`{k}: {v}`' for k, v in b.items())}"
        for stage, b in tlm_config.DEFAULT_BUDGET.items()
    )
    top_k = tlm_config.AUTO_TOP_K
    return [
        "## Defaults set by the model preset",
        "",
        "A stage key the config leaves out (globally, in the task and in the run) takes the value of the "
        "run's `model.preset`; a run that starts from a checkpoint (`kind: plm`, or a `tlm` run with "
        "`pretrained`) takes the `pretrained` row (`tlm.config.PRESET_DEFAULTS`).",
        "",
        "| preset | stage | " + " | ".join(f"`{k}`" for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
        *(
            f"| `{preset}` | `{stage}` | " + " | ".join(f"{values[k]:g}" for k in keys) + " |"
            for preset, stages in tlm_config.PRESET_DEFAULTS.items()
            for stage, values in stages.items()
        ),
        "",
        f"A stage that sets none of `max_steps`, `epochs` and `flops` gets {budget} (at least `min_steps`). "
        f"A task without `top_k` gets K = {top_k['hits']:,} / |T| training rows, between {top_k['min']:,} and "
        f"{top_k['max']:,}.",
        "",
    ]


def undocumented(schema_path: str | Path = SCHEMA_PATH) -> list[str]:
    """Keys of the schema without a description (the reference would leave their row blank)."""
    text = reference(schema_path)
    return [
        line.split("|")[1].strip()
        for line in text.splitlines()
        if line.startswith("| `") and line.endswith("|  |")
    ]


def main() -> None:
    print(reference(), end="")


if __name__ == "__main__":
    main()
