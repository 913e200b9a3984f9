"""shard_corpus: formats, streaming into shards, stable ids, skipped input counted, clear errors."""

import gzip
import json
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import python

from tlm.corpus import SHARD_SCHEMA, shard_corpus, shard_paths
from tlm.io import TLMInputError, read_json


def read_all(out):
    return pd.concat([pd.read_parquet(p) for p in shard_paths(out)], ignore_index=True)


def test_formats_ids_shards_and_skips(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"first doc\n\n   \nsecond \xff bad utf8\nthird  doc\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        for text in ["fourth", "", "first doc", "fifth"]:
            f.write(json.dumps({"text": text, "id": 1}) + "\n")
    pq.write_table(pa.table({"text": ["sixth", None, "seventh"], "x": [1, 2, 3]}), tmp_path / "c.parquet")
    (tmp_path / "d.jsonl").write_text('{"text": "eighth"}\n')
    paths = [str(tmp_path / n) for n in ("a.txt", "b.jsonl.gz", "c.parquet", "d.jsonl")]

    counts = shard_corpus(paths, tmp_path / "out", shard_size=3, dedup=True)
    docs = read_all(tmp_path / "out")
    assert docs.text.tolist() == ["first doc", "third doc", "fourth", "fifth", "sixth", "seventh", "eighth"]
    assert docs.doc_id.tolist() == list(range(7))
    assert [pq.read_metadata(p).num_rows for p in shard_paths(tmp_path / "out")] == [3, 3, 1]
    assert pq.read_schema(shard_paths(tmp_path / "out")[0]).equals(SHARD_SCHEMA, check_metadata=False)
    assert (counts.documents, counts.empty_skipped, counts.bad_utf8_skipped, counts.duplicates_skipped, counts.shards) == (
        7,
        4,
        1,
        1,
        3,
    )
    assert read_json(tmp_path / "out" / "manifest.json")["documents"] == 7

    shard_corpus(paths, tmp_path / "again", shard_size=3, dedup=True)
    pd.testing.assert_frame_equal(read_all(tmp_path / "again"), docs)  # stable ids
    assert shard_corpus(paths, tmp_path / "dups", shard_size=100, dedup=False).documents == 8


def test_streams_a_corpus_much_larger_than_a_shard(tmp_path):
    with open(tmp_path / "big.txt", "w") as f:
        for i in range(25_000):
            f.write(f"document number {i} about topic {i % 97}\n")
    counts = shard_corpus([str(tmp_path / "big.txt")], tmp_path / "out", shard_size=10_000)
    assert counts.shards == 3 and counts.documents == 25_000
    assert read_all(tmp_path / "out").doc_id.is_monotonic_increasing


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"\n \n", "no non-empty documents"),
        ("bad.jsonl", b'{"body": "x"}\n', "no field 'text'"),
        ("bad.parquet", b"not parquet", "not a readable Parquet file"),
        ("corpus.csv", b"text\nx\n", "unknown corpus format"),
    ],
)
def test_bad_corpus_gets_a_clear_error_and_no_output(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(TLMInputError, match=message) as err:
        shard_corpus([str(tmp_path / name)], tmp_path / "out", shard_size=10)
    assert name in str(err.value) and "Fix:" in str(err.value)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / name], "no temporary leftovers"


PEAK_RSS_MB = """
import sys
from tlm.corpus import shard_corpus
shard_corpus([sys.argv[1]], sys.argv[2], shard_size=20_000)
# VmHWM is this process's own peak RSS (ru_maxrss would also count the parent it was forked from)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_is_bounded_by_a_shard_not_the_corpus(tmp_path):
    filler = " ".join(f"word{i}" for i in range(12))
    peak, size_mb = {}, {}
    for blocks in (5, 100):  # 50,000 and 1,000,000 documents: 2 and 50 shards
        path = tmp_path / f"corpus-{blocks}.txt"
        with open(path, "w") as f:
            for block in range(blocks):
                f.write("".join(f"doc {block} {i} {filler}\n" for i in range(10_000)))
        out = subprocess.run(
            [python(), "-c", PEAK_RSS_MB, str(path), str(tmp_path / f"out-{blocks}")], capture_output=True, text=True, check=True
        )
        peak[blocks], size_mb[blocks] = float(out.stdout), path.stat().st_size / 2**20
    assert size_mb[100] > 80 and len(shard_paths(tmp_path / "out-100")) == 50
    growth = peak[100] - peak[5]
    assert growth < size_mb[100] / 10, f"peak RSS grew by {growth:.0f} MB from a 2-shard to a {size_mb[100]:.0f} MB corpus"
