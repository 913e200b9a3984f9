"""Snakemake's between-workflow cache (`--cache`, SNAKEMAKE_OUTPUT_CACHE) made safe for workflows
that run at once.

Two workflows started together both find no cache entry when they plan, so both build the cached
rules' outputs, and both store them. Snakemake (9.x, snakemake.caching.local) publishes an entry
with `shutil.move(tmp, entry)`: when the other workflow has published the same entry meanwhile and
it is a directory (results/corpus, results/index/shard-*), the move puts the new copy INSIDE it
(entry/entry), doubling the cache and nesting it in itself. `publish_once` replaces that last move
with a rename that keeps the entry published first (same inputs, same content) and drops the
second; the job's output then links to it as usual. Building twice remains (each workflow decides
before the other has stored anything); serialising workflows would cost more than it saves.
"""

from __future__ import annotations

import errno
import os
import shutil
import types
from pathlib import Path


def publish_once(src, dst, **kwargs):
    """shutil.move, except that a directory is renamed atomically and never into an existing entry:
    when `dst` is already published (not empty), it is kept and `src` stays where it was (in
    Snakemake's temporary directory, removed after the store)."""
    if Path(src).is_dir() and not Path(src).is_symlink():
        try:
            os.rename(src, dst)  # fails onto a non-empty directory, where shutil.move would nest
            return dst
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return dst
            if e.errno != errno.EXDEV:  # another filesystem: copied by shutil.move below
                raise
    return shutil.move(src, dst, **kwargs)


def patch_snakemake_cache() -> bool:
    """Make Snakemake's local output cache publish each entry once; False where its module differs
    (another Snakemake version: left as it is)."""
    try:
        from snakemake.caching import local
    except ImportError:
        return False
    if not hasattr(local, "shutil"):
        return False
    local.shutil = types.SimpleNamespace(**{**vars(shutil), "move": publish_once})
    return True
