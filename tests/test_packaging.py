"""The conda environments in envs/ ask for the same packages and versions as pyproject.toml."""

import os
import re
import shutil
import subprocess
import sys
import zipfile

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
    project = requirement_names(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    seen = set()
    for env_file in sorted((ROOT / "envs").glob("*.yaml")):
        deps = yaml.safe_load(env_file.read_text())["dependencies"]
        reqs = [d for d in deps if isinstance(d, str)] + [
            p for d in deps if isinstance(d, dict) for p in d["pip"]
        ]
        for name, spec in requirement_names(
            r for r in reqs if not r.startswith(("-e", "python", "pip"))
        ).items():
            assert name in project, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
            assert spec == project[name], (
                f"{env_file.name}: {name}{spec} but pyproject.toml has {name}{project[name]}"
            )
            seen.add(name)
    assert seen >= set(project) - {"snakemake"}, "every runtime dependency is in some environment"


def test_the_workflow_version_reads_git_without_writing_to_it(tmp_path):
    """A model card names the checkout's commit; reading it must not rewrite the checkout's index
    while jobs run (`git describe --dirty` refreshes it)."""
    import os
    import subprocess

    from tlm import __version__
    from tlm.export import workflow_version

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "f").write_text("a\n")
    git("add", "f")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    head = git("rev-parse", "--short", "HEAD")
    index = (tmp_path / ".git/index").read_bytes()
    os.utime(
        tmp_path / "f", (1, 1)
    )  # stat data the index no longer matches: a refresh would rewrite it
    assert workflow_version(tmp_path) == f"{__version__} ({head})"
    (tmp_path / "f").write_text("b\n")
    assert workflow_version(tmp_path) == f"{__version__} ({head}-dirty)"
    assert (tmp_path / ".git/index").read_bytes() == index
    assert workflow_version(tmp_path / "not-a-checkout") == __version__


def test_snakefile_min_version_is_pyprojects_snakemake():
    pin = requirement_names(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )["snakemake"]
    assert re.search(r'^min_version\("([^"]+)"\)', (ROOT / "Snakefile").read_text(), re.M).group(
        1
    ) == pin.removeprefix(">=")


def test_the_container_installs_what_make_install_does():
    """The Dockerfile pins torch as the Makefile does and installs the project; the Snakefile's
    container directive names the image the README builds."""
    makefile, dockerfile = (ROOT / "Makefile").read_text(), (ROOT / "Dockerfile").read_text()
    torch = re.search(r"^TORCH \?= (\S+)", makefile, re.M).group(1)
    assert (
        f"ARG TORCH={torch}\n" in dockerfile
        and 'pip install --index-url "$TORCH_INDEX" "$TORCH"' in dockerfile
    )
    assert re.search(r'^RUN python -m pip install "\.\$EXTRAS"', dockerfile, re.M)
    assert 'container: str(Path(workflow.basedir) / "tlm.sif")' in (ROOT / "Snakefile").read_text()
    assert "apptainer build tlm.sif" in (ROOT / "README.md").read_text()


def test_an_installed_tlm_reads_its_own_schema(tmp_path):
    """The wheel ships the schema (config/schema.yaml links to it), so a tlm installed without the
    checkout (the container's `pip install .`) still builds its settings and validates configs."""
    src = tmp_path / "src"  # what the .dockerignore sends
    shutil.copytree(
        ROOT / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            wheel_dir,
            src,
        ],
        check=True,
    )
    site = tmp_path / "site"
    with zipfile.ZipFile(next(wheel_dir.glob("tlm-*.whl"))) as wheel:
        assert "tlm/schema.yaml" in wheel.namelist()
        wheel.extractall(site)
    code = (
        "import tlm.settings as s, tlm.config as c; print(s.SCHEMA_PATH); "
        "print(s.StageConfig(batch_size=8, learning_rate=1e-3).patience)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == str(site / "tlm" / "schema.yaml")
