"""Snakemake's between-workflow cache, stored by two workflows at once (tlm.cache)."""

import shutil

from tlm.cache import patch_snakemake_cache, publish_once


def entry(path, text):
    path.mkdir(parents=True)
    (path / "part.parquet").write_text(text)
    return path


def test_a_directory_entry_is_published_once(tmp_path):
    """shutil.move of a directory onto one that exists nests it inside; publish_once keeps the first."""
    cache = tmp_path / "cache"
    first = entry(tmp_path / "a" / "h", "first")
    second = entry(tmp_path / "b" / "h", "second")
    cache.mkdir()
    publish_once(first, cache / "h")
    publish_once(second, cache / "h")
    assert sorted(p.name for p in (cache / "h").iterdir()) == ["part.parquet"], (
        "no entry nested in itself"
    )
    assert (cache / "h" / "part.parquet").read_text() == "first" and not first.exists()
    shutil.move(entry(tmp_path / "c" / "h", "third"), cache / "h")  # what Snakemake's store does
    assert (cache / "h" / "h").is_dir()


def test_files_and_new_entries_move_as_before(tmp_path):
    (tmp_path / "f").write_text("x")
    publish_once(tmp_path / "f", tmp_path / "g", copy_function=shutil.copy)
    assert (tmp_path / "g").read_text() == "x" and not (tmp_path / "f").exists()
    assert patch_snakemake_cache()
    from snakemake.caching import local

    assert local.shutil.move is publish_once and local.shutil.copy is shutil.copy
