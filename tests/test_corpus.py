"""shard_corpus: formats, streaming into shards, stable ids, skipped input counted, clear errors."""

import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import python

from tlm.corpus import SHARD_SCHEMA, SKIPS, group_parts, passages, shard_corpus, shard_paths
from tlm.corpus.shards import NpyFile, duplicates_across_parts, save_digests
from tlm.io import TLMInputError, read_json
from tlm.storage import constant_prefix, is_url, match_keys


def read_all(out):
    return pd.concat([pd.read_parquet(p) for p in shard_paths(out)], ignore_index=True)


def test_formats_ids_shards_and_skips(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"first doc\n\n   \nsecond \xff bad utf8\nthird  doc\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        for text in ["fourth", "", "first doc", "fifth"]:
            f.write(json.dumps({"text": text, "id": 1}) + "\n")
    pq.write_table(
        pa.table({"text": ["sixth", None, "seventh"], "x": [1, 2, 3]}), tmp_path / "c.parquet"
    )
    (tmp_path / "d.jsonl").write_text('{"text": "eighth"}\n')
    paths = [str(tmp_path / n) for n in ("a.txt", "b.jsonl.gz", "c.parquet", "d.jsonl")]

    counts = shard_corpus(paths, tmp_path / "out", shard_size=3, dedup=True)
    docs = read_all(tmp_path / "out")
    assert docs.text.tolist() == [
        "first doc",
        "third doc",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
    ]
    assert docs.doc_id.tolist() == list(range(7))
    assert [pq.read_metadata(p).num_rows for p in shard_paths(tmp_path / "out")] == [3, 3, 1]
    assert pq.read_schema(shard_paths(tmp_path / "out")[0]).equals(
        SHARD_SCHEMA, check_metadata=False
    )
    assert (counts.records, counts.documents, counts.shards) == (13, 7, 3)
    assert counts.skipped == {**dict.fromkeys(SKIPS, 0), "empty": 4, "bad_utf8": 1, "duplicate": 1}
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
        (
            "bad.jsonl",
            b'{"body": "x"}\n',
            r"1 of the first 1 records are malformed \(1 missing field; line 1: missing field \(fields: \['body'\]\)\)",
        ),
        (
            "cut.jsonl.gz",
            gzip.compress(b'{"text": "a"}\n' * 1000)[:-30],
            "the compressed file is truncated or corrupt",
        ),
        ("bad.parquet", b"not parquet", "not a readable Parquet file"),
        ("corpus.csv", b"text\nx\n", "unknown corpus format"),
        (
            "utf16.txt",
            "one doc\ntwo docs\n".encode("utf-16"),
            "not UTF-8 text .a UTF-16 byte-order mark",
        ),
        (
            "utf16.jsonl.gz",
            gzip.compress('{"text": "a"}\n'.encode("utf-16-be")),
            "not UTF-8 text .NUL bytes",
        ),
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
    # 250,000 and 1,000,000 documents: 13 and 50 shards (the allocator's own growth over the first
    # ten or so shards, ~8 MB whatever the corpus's size, is in both)
    for blocks in (25, 100):
        path = tmp_path / f"corpus-{blocks}.txt"
        with open(path, "w") as f:
            for block in range(blocks):
                f.write("".join(f"doc {block} {i} {filler}\n" for i in range(10_000)))
        out = subprocess.run(
            [python(), "-c", PEAK_RSS_MB, str(path), str(tmp_path / f"out-{blocks}")],
            capture_output=True,
            text=True,
            check=True,
        )
        peak[blocks], size_mb[blocks] = float(out.stdout), path.stat().st_size / 2**20
    assert size_mb[100] > 80 and len(shard_paths(tmp_path / "out-100")) == 50
    growth = peak[100] - peak[25]
    assert growth < size_mb[100] / 10, (
        f"peak RSS grew by {growth:.0f} MB from a 13-shard to a {size_mb[100]:.0f} MB corpus"
    )


def test_passages_cut_long_text_at_spaces():
    text = "  ".join(f"w{i:04d}" for i in range(100))  # 100 words of 5 characters, double-spaced
    parts = list(passages([text[:200], text[200:]], max_chars=60))
    assert all(len(p) <= 60 for p in parts) and " ".join(parts) == " ".join(text.split())
    assert all(p.split()[-1].startswith("w") and len(p.split()[-1]) == 5 for p in parts), (
        "cut between words"
    )
    assert list(passages(["x" * 25], max_chars=10)) == ["x" * 10, "x" * 10, "x" * 5], (
        "no space: cut at the limit"
    )
    assert list(passages(["", "  "], 10)) == []


def test_long_documents_are_split_or_truncated_and_counted(tmp_path):
    long = " ".join(f"word{i}" for i in range(5000))  # ~49,000 characters
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ("short one", long, "short two"))
    )
    split = shard_corpus([str(tmp_path / "c.jsonl")], tmp_path / "split", 100, max_doc_chars=1000)
    docs = read_all(tmp_path / "split").text.tolist()
    assert docs[0] == "short one" and docs[-1] == "short two" and " ".join(docs[1:-1]) == long
    assert (
        max(map(len, docs)) <= 1000
        and split.long_documents == 1
        and split.documents == len(docs) > 40
    )
    cut = shard_corpus(
        [str(tmp_path / "c.jsonl")], tmp_path / "cut", 100, max_doc_chars=1000, long_docs="truncate"
    )
    assert (
        read_all(tmp_path / "cut").text.tolist() == ["short one", docs[1], "short two"]
        and cut.long_documents == 1
    )


def test_malformed_lines_are_skipped_and_counted_by_cause(tmp_path):
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(2000)]
    lines[10] = '{"text": "cut off'  # bad JSON
    lines[20] = '["a", "list"]'
    lines[30] = '{"body": "no text field"}'
    lines[40] = '{"text": 42}'
    lines[41] = '{"text": null}'  # an empty document, as a null in Parquet
    (tmp_path / "c.jsonl").write_bytes(
        ("\n".join(lines[:50]) + "\n").encode()
        + b'{"text": "\xff"}\n'
        + ("\n".join(lines[50:]) + "\n").encode()
    )
    counts = shard_corpus([str(tmp_path / "c.jsonl")], tmp_path / "out", 1000)
    assert counts.documents == 1995 and counts.records == 2001
    assert {k: v for k, v in counts.skipped.items() if v} == {
        "bad_json": 1,
        "not_an_object": 1,
        "missing_field": 1,
        "not_text": 1,
        "bad_utf8": 1,
        "empty": 1,
    }
    assert read_json(tmp_path / "out" / "manifest.json")["skipped"]["missing_field"] == 1


def test_a_wrong_text_field_stops_at_once_with_the_fields_found(tmp_path):
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"body": f"doc {i}", "id": i}) + "\n" for i in range(50_000))
    )
    with pytest.raises(
        TLMInputError,
        match=r"1000 of the first 1000 records are malformed .*fields: \['body', 'id'\].*corpus.text_field",
    ):
        shard_corpus([str(tmp_path / "c.jsonl")], tmp_path / "out", 1000)
    tolerant = shard_corpus(
        [str(tmp_path / "c.jsonl")], tmp_path / "out", 1000, text_field="body", max_bad_share=0.0
    )
    assert tolerant.documents == 50_000


STREAMED = """
import json, sys
import tlm.corpus as corpus
import tlm.corpus.reading
tlm.corpus.reading.LINE_CAP = int(sys.argv[3])
counts = corpus.shard_corpus([sys.argv[1]], sys.argv[2], shard_size=100_000, max_doc_chars=10_000)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
print(json.dumps({"documents": counts.documents, "long": counts.long_documents, "skipped": counts.skipped, "peak": peak}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_line_too_long_to_hold_is_streamed_into_passages(tmp_path):
    """A 40 MB document (as JSON with escapes, other keys before and after it, and as plain text) is
    read in pieces of 1 MB: the same passages as reading it whole, in memory bounded by the pieces."""
    # every 100th word JSON-escaped: a quote, é, an emoji (a surrogate pair)
    words = [
        rf"w{i}é\"x\u00e9\ud83d\ude00" if i % 100 == 0 else f"word{i}" for i in range(4_000_000)
    ]
    body = " ".join(words)
    with open(tmp_path / "c.jsonl", "w", encoding="utf-8") as f:
        f.write('{"text": "before"}\n')
        f.write(
            '{"id": 1, "meta": {"a": [1, "x\\"}"], "b": null}, "text": "'
            + body
            + '", "tail": [true, {"c": "}"}]}\n'
        )
        f.write('{"text": "after"}\n')
    text = json.loads('"' + body + '"')
    (tmp_path / "c.txt").write_text(f"before\n{text}\nafter\n", encoding="utf-8")

    def run(name, cap):
        out = subprocess.run(
            [
                python(),
                "-c",
                STREAMED,
                str(tmp_path / name),
                str(tmp_path / f"{name}-{cap}"),
                str(cap),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout), read_all(tmp_path / f"{name}-{cap}").text.tolist()

    (whole, expected), (streamed, docs), (_, txt_docs) = (
        run("c.jsonl", 1 << 30),
        run("c.jsonl", 1 << 20),
        run("c.txt", 1 << 20),
    )
    assert docs == expected == txt_docs and expected[0] == "before" and expected[-1] == "after"
    assert " ".join(expected[1:-1]) == " ".join(text.split()) and streamed["long"] == 1
    assert streamed["peak"] < whole["peak"] - 100, (
        f"streamed {streamed['peak']:.0f} MB vs whole {whole['peak']:.0f} MB"
    )


def test_parts_give_the_ids_of_one_job_and_dedup_is_exact_across_parts(tmp_path):
    """Files read as parts of their own (one job each in the workflow): the same documents and ids
    as one part, a text repeated in a later file dropped there (its first occurrence kept), and
    shards that never span two parts."""
    texts = [f"doc {i}" for i in range(10)]
    files = []
    for name, chunk in (
        ("a", texts[:4] + ["doc 1"]),
        ("b", ["doc 2", *texts[4:7]]),
        ("c", texts[7:]),
    ):
        files.append(str(tmp_path / f"{name}.txt"))
        Path(files[-1]).write_text("".join(t + "\n" for t in chunk))
    one = shard_corpus(files, tmp_path / "one", shard_size=3, dedup=True)
    parts = shard_corpus(files, tmp_path / "parts", shard_size=3, dedup=True, part_mb=1e-9)
    assert read_all(tmp_path / "parts").text.tolist() == read_all(tmp_path / "one").text.tolist()
    assert (
        read_all(tmp_path / "parts").doc_id.tolist() == list(range(10))
        and texts == read_all(tmp_path / "parts").text.tolist()
    )
    assert one.skipped["duplicate"] == parts.skipped["duplicate"] == 2
    assert parts.documents == one.documents == 10
    manifest = read_json(tmp_path / "parts" / "manifest.json")
    assert [p["staged"] for p in manifest["parts"]] == [4, 4, 3]  # "doc 1" dropped within a
    assert [pq.read_metadata(p).num_rows for p in shard_paths(tmp_path / "parts")] == [3, 1, 3, 3]
    assert [s["first_id"] for s in manifest["shard_plan"]] == [0, 3, 4, 7]


def test_dedup_across_parts_range_by_range_equals_one_sort_of_every_digest(tmp_path, monkeypatch):
    """The global step reads the parts' sorted digests one range of values at a time: with ranges
    of a few digests (many ranges, some empty, duplicates in three parts, an empty part) and the
    ranges' bounds found a few digests at a time, it drops exactly what one sort of all the digests
    would: every occurrence after the first in corpus order."""
    monkeypatch.setattr(NpyFile, "BLOCK", 16)
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 2**63, size=(400, 2), dtype=np.uint64)
    pool[1::7, 0] = pool[::7, 0][: len(pool[1::7])]  # equal first words, different second words
    dirs, texts = [], []
    for size in (150, 0, 200, 120, 90):
        digests = pool[rng.choice(len(pool), size=size, replace=False)]
        dirs.append(tmp_path / f"part{len(dirs)}")
        dirs[-1].mkdir()
        save_digests([d.tobytes() for d in digests], dirs[-1])
        texts.append([d.tobytes() for d in digests])
    seen, expected = set(), []
    for part in texts:
        expected.append([row for row, t in enumerate(part) if t in seen])
        seen.update(part)
    for chunk in (7, 100, 10**6):
        got = duplicates_across_parts(dirs, chunk=chunk)
        assert [g.tolist() for g in got] == expected
    assert sum(map(len, expected)) > 100


def test_group_parts_by_bytes_and_names_kept_when_files_are_added():
    files, sizes = ["a", "b", "c", "d"], [3 << 20, 1 << 20, 1 << 20, 5 << 20]
    parts = group_parts(files, sizes, part_mb=2)
    assert list(parts.values()) == [["a"], ["b", "c"], ["d"]]
    more = group_parts([*files, "e"], [*sizes, 1], part_mb=2)
    assert list(more.items())[:3] == list(parts.items()) and list(more.values())[3] == ["e"]


def test_globs_over_storage_keys_stay_within_a_folder():
    keys = ["c/a.jsonl.gz", "c/b.jsonl.gz", "c/sub/x.jsonl.gz", "c/a.txt", "d/a.jsonl.gz"]
    assert match_keys("c/*.jsonl.gz", keys) == ["c/a.jsonl.gz", "c/b.jsonl.gz"]
    assert match_keys("c/*/*.jsonl.gz", keys) == ["c/sub/x.jsonl.gz"]
    assert match_keys("c/a.txt", keys) == ["c/a.txt"] and constant_prefix("c/s*/x") == "c/s"
    assert is_url("s3://bucket/c/a.txt") and not is_url("/data/c.txt")
