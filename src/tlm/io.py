"""Atomic outputs and friendly input errors shared by every stage."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:  # pandas is not imported for it: a corpus job's start-up stays short
    import pandas as pd


class TLMInputError(Exception):
    """Bad user input: the message names the file and how to fix it (no traceback needed)."""


@contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False):
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    A killed or failing job therefore never leaves a half-written file or directory under the
    final name, which Snakemake (or a rerun) would otherwise trust.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(
        f".{glob.escape(path.name)}.*.tmp"
    ):  # of an attempt killed before (one job writes a path)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name  # the caller creates it (a file, or a directory when is_dir)
    try:
        yield target
        if is_dir and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def arrow_table(df: pd.DataFrame, schema: pa.Schema | None = None) -> pa.Table:
    """`df` as an Arrow table; text columns as `string` (pandas >= 3 would give `large_string`), so
    every artefact keeps the documented schema."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    if schema is None:
        table = table.cast(
            pa.schema(
                [
                    f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f
                    for f in table.schema
                ]
            )
        )
    return table


def write_parquet(df: pd.DataFrame, path, schema: pa.Schema | None = None) -> None:
    """Write `df` atomically (see `arrow_table`)."""
    table = arrow_table(df, schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())
