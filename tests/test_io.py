"""Atomic outputs: a failing or killed writer leaves nothing under the final name."""

import subprocess
import sys

import pytest

from tlm.io import atomic_path


def test_exception_leaves_no_output(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_directory_is_replaced_whole(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("old")
    with atomic_path(tmp_path / "d", is_dir=True) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new"]


def test_killed_writer_leaves_no_final_file(tmp_path):
    code = (
        "import os, signal, sys\n"
        "from tlm.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('half written')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.parquet")])
    assert proc.returncode != 0
    assert not (tmp_path / "out.parquet").exists()
    assert all(p.name.startswith(".out.parquet.") for p in tmp_path.iterdir()), (
        "only a hidden temporary remains"
    )


def test_parquet_text_columns_are_string(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    from tlm.io import write_parquet

    write_parquet(pd.DataFrame({"text": ["a", "b"], "n": [1, 2]}), tmp_path / "t.parquet")
    assert str(pq.read_schema(tmp_path / "t.parquet").field("text").type) == "string"


def test_a_rerun_clears_the_temporaries_of_a_killed_attempt(tmp_path):
    stale = tmp_path / ".out.parquet.abc123.tmp"
    stale.mkdir()
    (stale / "out.parquet").write_text("half written")
    with atomic_path(tmp_path / "out.parquet") as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
