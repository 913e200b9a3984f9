"""Paths that name objects in a storage (s3://bucket/key) beside local ones: what is one, and the
shell glob of a key (`*`, `?`, `[...]` within one level of the key's folders, as `glob` locally)
matched against the keys a listing returns."""

from __future__ import annotations

import fnmatch
import glob
import re

URL = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_url(path: str) -> bool:
    return bool(URL.match(str(path)))


def constant_prefix(key_pattern: str) -> str:
    """The part of a key pattern before its first glob character (what a listing can filter on)."""
    m = re.search(r"[*?\[]", key_pattern)
    return key_pattern[: m.start()] if m else key_pattern


def match_keys(key_pattern: str, keys) -> list[str]:
    """The keys matching a shell glob, level by level (`*` does not cross a `/`), sorted."""
    if not glob.has_magic(key_pattern):
        return [k for k in keys if k == key_pattern]
    levels = key_pattern.split("/")
    return sorted(
        k
        for k in keys
        if len(parts := k.split("/")) == len(levels)
        and all(fnmatch.fnmatchcase(p, pat) for p, pat in zip(parts, levels, strict=True))
    )
