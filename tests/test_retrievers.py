"""The retrievers and run kinds tables are what the rules and the library read: a new retriever is
one module (tests/retriever_first.py) plus one row, and the workflow plans and runs it like the
built-in ones."""

import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, smk, tiny_config, write_config

from tlm.config import validate_config
from tlm.retrievers import RETRIEVERS
from tlm.run_kinds import RUN_KINDS

TESTS = Path(__file__).resolve().parent


def test_the_schema_lists_the_tables_rows():
    runs = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())["properties"]["runs"][
        "additionalProperties"
    ]
    assert runs["properties"]["external"]["enum"] == [
        name for name in RETRIEVERS if name != "first"
    ]
    assert runs["properties"]["kind"]["enum"] == list(RUN_KINDS)


@pytest.fixture
def first_retriever():
    """The row registered in this process, as the workflow's processes register it (sitecustomize)."""
    sys.path.insert(0, str(TESTS))
    import retriever_first  # noqa: F401

    yield RETRIEVERS["first"]
    RETRIEVERS.pop("first")
    sys.path.remove(str(TESTS))


def test_a_registered_retriever_is_a_valid_external(first_retriever):
    config = {
        "corpus": {"paths": ["c.parquet"]},
        "tasks": {"t": {"train": "t.csv", "dev": "d.csv", "test": "e.csv"}},
    }
    validate_config({**config, "runs": {"first": {"external": "first"}}})
    assert first_retriever.rule == "select_first" and first_retriever.source == "first"


def test_a_new_retriever_is_planned_and_run_by_the_workflow(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["runs"] = {"first": {"external": "first"}, "tlm": {"external": "bm25"}}
    write_config(tmp_path, cfg)
    # the workflow's processes (snakemake and its jobs' scripts) register the row as they start
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import retriever_first  # noqa: F401\n")
    env = {"PYTHONPATH": f"{site}:{TESTS}:{ROOT / 'src'}"}
    plan = smk(tmp_path, "-n", env=env).stdout
    for job in ("select_first", "select_external", "train_stage1"):
        assert f"rule {job}:" in plan or f"localrule {job}:" in plan, job
    assert (
        "source: first" in plan or "source=first" in plan
    )  # the run's S tokenized in the task's vocabulary
    smk(
        tmp_path,
        "results/retrieval/demo/first.parquet",
        "results/models/demo/tokens/first",
        env=env,
    )
    s = pd.read_parquet(tmp_path / "results/retrieval/demo/first.parquet")
    assert s.doc_id.tolist() == list(range(40)) and (s.best_rank == 0).all()
    assert (tmp_path / "logs/select_first/demo.log").exists()
