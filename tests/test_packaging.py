"""The conda environments in envs/ ask for the same packages and versions as pyproject.toml."""

import re

import tomllib
import yaml
from conftest import ROOT


def requirement_names(reqs):
    out = {}
    for req in reqs:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", req)
        out[m.group(1).lower()] = m.group(2).replace(" ", "")
    return out


def test_envs_match_pyproject():
    project = requirement_names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    seen = set()
    for env_file in sorted((ROOT / "envs").glob("*.yaml")):
        deps = yaml.safe_load(env_file.read_text())["dependencies"]
        reqs = [d for d in deps if isinstance(d, str)] + [p for d in deps if isinstance(d, dict) for p in d["pip"]]
        for name, spec in requirement_names(r for r in reqs if not r.startswith(("-e", "python", "pip"))).items():
            assert name in project, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
            assert spec == project[name], f"{env_file.name}: {name}{spec} but pyproject.toml has {name}{project[name]}"
            seen.add(name)
    assert seen >= set(project) - {"snakemake"}, "every runtime dependency is in some environment"
