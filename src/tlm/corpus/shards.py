"""The corpus cut into Parquet shards of global, dense, stable document ids, exact duplicates
dropped on request, in three steps that the workflow runs as jobs (rules/corpus.smk):

1. `shard_part`, one job per part (consecutive input files grouped by bytes, `group_parts`): the
   part's documents read and cleaned, in order, as LZ4-compressed Arrow batches (texts.arrow),
   with dedup the 16-byte digest of each, sorted (hashes.npy, rows.npy; exact duplicates within
   the part dropped here), and its counts (counts.json). The expensive step: parsing and cleaning
   the input.
2. `assign_ids`, once (the checkpoint): the parts' sorted digests, read one range of digest values
   at a time (memory bounded by a range and the duplicates found), keep the first occurrence (in file
   order, then position) of every text across parts, so dedup is exact over the whole corpus; the
   kept documents of each part get the next dense ids and are cut into shards of at most
   shard_size (a shard never spans two parts); the counts merge into manifest.json, which also
   holds the shards' plan, and the positions dropped as duplicates of earlier parts go to
   dropped.npz. It reads 20 bytes a document, never a text.
3. `write_shard`, one job per shard: its rows of its part, less the dropped, with their ids, as
   zstd Parquet.

The i-th kept document of the inputs (in the order given) gets doc_id i, however the files are
grouped, so the same inputs always give the same ids. `shard_corpus` runs the three steps in one
process (the library's one-call path).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tlm.corpus.reading import iter_texts
from tlm.corpus.records import SKIPS, CorpusCounts
from tlm.io import TLMInputError, atomic_path, read_json, write_json

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema([("doc_id", pa.int64()), ("text", pa.string())])
STAGED_SCHEMA = pa.schema([("text", pa.string())])
BATCH = 8192  # rows of a part's staged batches (the last one of a part may be shorter)
PART_MB = 256  # corpus.part_mb's default
DEDUP_CHUNK = 2_000_000  # digests the global step holds at once


def group_parts(files: list[str], sizes: list[int], part_mb: float = PART_MB) -> dict[str, list]:
    """Parts of the corpus, one sharding job each: consecutive files (in the order given) grouped
    until a part holds at least `part_mb` MB (a file that large is a part of its own), named by a
    digest of their paths, so a part whose files are the same keeps its name (and its job's output)
    when files are added elsewhere. Returned in the corpus's order."""
    parts, group, size = {}, [], 0
    for path, nbytes in zip(files, sizes, strict=True):
        group.append(path)
        size += nbytes
        if size >= part_mb * 2**20:
            parts[part_name(group)], group, size = group, [], 0
    if group:
        parts[part_name(group)] = group
    return parts


def part_name(files: list[str]) -> str:
    return hashlib.blake2b("\n".join(map(str, files)).encode(), digest_size=6).hexdigest()


def shard_part(
    paths: list[str],
    out_dir: str | Path,
    text_field: str = "text",
    dedup: bool = False,
    min_chars: int = 1,
    max_doc_chars: int = 10_000,
    long_docs: str = "split",
    max_bad_share: float = 0.01,
) -> CorpusCounts:
    """Read one part's files into `out_dir` (texts.arrow, hashes.npy, counts.json): documents
    longer than `max_doc_chars` become passages (`long_docs`: split, or truncate to the first);
    empty ones (whitespace-only or shorter than `min_chars`) and malformed records are skipped;
    with `dedup`, exact duplicate texts within the part too (a set of 16-byte digests: ~50 bytes per
    distinct document). Everything skipped is counted, by cause."""
    counts = CorpusCounts()
    seen: set[bytes] = set()
    digests: list[bytes] = []
    options = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        with pa.ipc.new_file(tmp / "texts.arrow", STAGED_SCHEMA, options=options) as writer:
            batch: list[str] = []
            for path in paths:
                for text in iter_texts(
                    path,
                    text_field,
                    counts,
                    max_doc_chars,
                    max_bad_share,
                    truncate=long_docs == "truncate",
                ):
                    if len(text) < max(min_chars, 1):
                        counts.skipped["empty"] += 1
                        continue
                    if dedup:
                        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
                        if digest in seen:
                            counts.skipped["duplicate"] += 1
                            continue
                        seen.add(digest)
                        digests.append(digest)
                    batch.append(text)
                    counts.documents += 1
                    if len(batch) == BATCH:
                        writer.write_batch(
                            pa.record_batch([pa.array(batch, pa.string())], ["text"])
                        )
                        batch.clear()
            if batch:
                writer.write_batch(pa.record_batch([pa.array(batch, pa.string())], ["text"]))
        save_digests(digests, tmp)
        write_json({**asdict(counts), "files": list(map(str, paths))}, tmp / "counts.json")
    log.info("part of %d files: %s", len(paths), asdict(counts))
    return counts


def save_digests(digests: list[bytes], out_dir: Path) -> None:
    """A part's digests sorted, as two uint64 words (hashes.npy, shape (2, n): each word's column
    contiguous, so a range of digests is found by a binary search of the memory-mapped file), and
    the staged row of each (rows.npy)."""
    words = np.frombuffer(b"".join(digests), np.uint64).reshape(-1, 2)
    order = np.lexsort((words[:, 1], words[:, 0]))
    np.save(out_dir / "hashes.npy", np.ascontiguousarray(words[order].T))
    np.save(out_dir / "rows.npy", order.astype(np.uint32 if len(order) < 2**32 else np.int64))


def duplicates_across_parts(part_dirs: list[Path], chunk: int = DEDUP_CHUNK) -> list[np.ndarray]:
    """For each part (in the corpus's order), the sorted staged rows whose text an earlier part
    holds. The parts' sorted digests are read one range of digest values at a time (about `chunk`
    digests of all parts together), never every digest of the corpus at once
    (benchmarks/dedup_step.py). The files are read, not memory-mapped: the kernel maps a mapped
    file's cached pages around each one touched, and they count as the job's memory (~10 bytes a
    document, growing with the corpus, when they were). A part holds each text once (shard_part),
    so the first occurrence in corpus order is the one in the lowest part."""
    hashes = [NpyFile(Path(d) / "hashes.npy") for d in part_dirs]
    rows = [NpyFile(Path(d) / "rows.npy") for d in part_dirs]
    ranges = max(1, -(-sum(h.length for h in hashes) // chunk))
    # bounds[p, r]: part p's digests whose first word is below range r's upper bound
    upper = np.array([r * 2**64 // ranges for r in range(1, ranges)], np.uint64)
    bounds = np.array([[*h.count_below(upper), h.length] for h in hashes], np.int64)
    found: list[list[np.ndarray]] = [[] for _ in part_dirs]
    start = np.zeros(len(part_dirs), np.int64)
    for stop in bounds.T:
        spans = list(zip(start, stop, strict=True))
        first = np.concatenate([h.read(a, b, 0) for h, (a, b) in zip(hashes, spans)])
        second = np.concatenate([h.read(a, b, 1) for h, (a, b) in zip(hashes, spans)])
        part = np.repeat(np.arange(len(part_dirs), dtype=np.int32), stop - start)
        order = np.lexsort((part, second, first))
        first, second = first[order], second[order]
        repeat = order[np.flatnonzero((first[1:] == first[:-1]) & (second[1:] == second[:-1])) + 1]
        offset = np.concatenate([[0], np.cumsum(stop - start)])
        for p in np.unique(part[repeat]):
            at = repeat[part[repeat] == p] - offset[p]
            found[p].append(rows[p].read(start[p], stop[p])[at])
        start = stop
    return [np.sort(np.concatenate(f)) if f else np.zeros(0, np.int64) for f in found]


class NpyFile:
    """Slices of the rows of a saved C-ordered 1- or 2-d array, read from the file at each call."""

    BLOCK = 1 << 20  # values of a row that count_below holds at once

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, self.dtype = read_header(f)
            self.offset = f.tell()
        if fortran or len(shape) > 2:
            raise ValueError(f"{path}: a C-ordered 1- or 2-d array expected")
        self.length = shape[-1]

    def read(self, start: int, stop: int, row: int = 0) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset + (row * self.length + int(start)) * self.dtype.itemsize)
            return np.fromfile(f, self.dtype, count=int(stop) - int(start))

    def count_below(self, values: np.ndarray, row: int = 0) -> np.ndarray:
        """How many values of a sorted row are below each of `values` (one block at a time)."""
        counts = np.zeros(len(values), np.int64)
        for a in range(0, self.length, self.BLOCK):
            counts += np.searchsorted(self.read(a, min(a + self.BLOCK, self.length), row), values)
        return counts


def assign_ids(
    parts: dict[str, str | Path], manifest_path, dropped_path, shard_size: int, dedup: bool
) -> dict:
    """The global step over the parts (name -> directory, in the corpus's order): exact dedup
    across parts (the first occurrence in (file order, position) order is kept), dense ids, the
    shards' plan and the merged counts, written to `manifest_path` (returned) and `dropped_path`."""
    counts = [read_json(Path(d) / "counts.json") for d in parts.values()]
    staged = np.array([c["documents"] for c in counts], np.int64)
    if dedup:
        dropped = dict(zip(parts, duplicates_across_parts(list(parts.values())), strict=True))
    else:
        dropped = {name: np.zeros(0, np.int64) for name in parts}
    plan, first_id = [], 0
    for name, n in zip(parts, staged, strict=True):
        d = dropped[name]
        kept = int(n) - len(d)
        gaps = d - np.arange(len(d))  # the staged row of the j-th kept one: j + #gaps <= j
        for lo in range(0, kept, shard_size):
            hi = min(lo + shard_size, kept)
            rows = [int(j + np.searchsorted(gaps, j, side="right")) for j in (lo, hi - 1)]
            rows[1] += 1
            inside = d[(d >= rows[0]) & (d < rows[1])]
            plan.append(
                {
                    "part": name,
                    "rows": rows,
                    "first_id": first_id + lo,
                    "documents": hi - lo,
                    "dropped": hashlib.blake2b(
                        inside.astype(np.int64).tobytes(), digest_size=8
                    ).hexdigest(),
                }
            )
        first_id += kept
    merged = CorpusCounts(
        records=sum(c["records"] for c in counts),
        documents=first_id,
        long_documents=sum(c["long_documents"] for c in counts),
        utf8_replaced=sum(c["utf8_replaced"] for c in counts),
        shards=len(plan),
        skipped={cause: sum(c["skipped"][cause] for c in counts) for cause in SKIPS},
    )
    merged.skipped["duplicate"] += sum(len(d) for d in dropped.values())
    files = [f for c in counts for f in c["files"]]
    if merged.documents == 0:
        skipped = (
            ", ".join(f"{n} {cause.replace('_', ' ')}" for cause, n in merged.skipped.items() if n)
            or "none"
        )
        raise TLMInputError(
            f"{', '.join(files)}: the corpus has no non-empty documents (skipped: {skipped}). "
            "Fix: point `corpus.paths` at files with text."
        )
    # np.savez given a name without .npz would add it
    with atomic_path(dropped_path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **dropped)
    manifest = {
        **asdict(merged),
        "parts": [
            {"name": name, "files": c["files"], "staged": c["documents"]}
            for name, c in zip(parts, counts, strict=True)
        ],
        "shard_plan": plan,
    }
    write_json(manifest, manifest_path)
    log.info("corpus: %s", asdict(merged))
    return manifest


def write_shard(part_dir, dropped_path, entry: dict, out_path) -> None:
    """Shard `entry` of the plan: its rows of its part's staged texts, less the dropped, with their
    global ids, as zstd Parquet in batches (memory bounded by a batch)."""
    start, stop = entry["rows"]
    with np.load(dropped_path) as npz:
        drops = npz[entry["part"]]
    drops = drops[(drops >= start) & (drops < stop)]
    next_id = entry["first_id"]
    with (
        pa.OSFile(str(Path(part_dir) / "texts.arrow")) as source,
        atomic_path(out_path) as tmp,
        pq.ParquetWriter(tmp, SHARD_SCHEMA, compression="zstd") as writer,
    ):
        reader = pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(use_threads=False))
        for b in range(start // BATCH, -(-stop // BATCH)):
            lo, hi = max(start - b * BATCH, 0), min(stop - b * BATCH, BATCH)
            texts = reader.get_batch(b).column(0).slice(lo, hi - lo)
            if len(drops):
                texts = texts.filter(~np.isin(np.arange(b * BATCH + lo, b * BATCH + hi), drops))
            ids = np.arange(next_id, next_id + len(texts), dtype=np.int64)
            writer.write_table(pa.table({"doc_id": ids, "text": texts}, schema=SHARD_SCHEMA))
            next_id += len(texts)
    if next_id - entry["first_id"] != entry["documents"]:  # the part is not the one planned
        raise TLMInputError(
            f"{part_dir}: {next_id - entry['first_id']} documents for shard {out_path}, planned "
            f"{entry['documents']}. Fix: delete results/corpus and run again."
        )


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.parquet"


def shard_corpus(
    paths: list[str],
    out_dir: str | Path,
    shard_size: int,
    text_field: str = "text",
    dedup: bool = False,
    min_chars: int = 1,
    max_doc_chars: int = 10_000,
    long_docs: str = "split",
    max_bad_share: float = 0.01,
    part_mb: float = PART_MB,
) -> CorpusCounts:
    """The three steps in one process: `paths` into `out_dir`/shard-00000.parquet, ... and
    manifest.json, the same shards as the workflow's jobs write (nothing is left under `out_dir`'s
    name if a step fails)."""
    sizes = [
        os.path.getsize(p) if os.path.exists(p) else 0 for p in paths
    ]  # missing: iter_texts says
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        parts = group_parts(paths, sizes, part_mb)
        dirs = {name: tmp / "parts" / name for name in parts}
        for name, files in parts.items():
            shard_part(
                files,
                dirs[name],
                text_field,
                dedup,
                min_chars,
                max_doc_chars,
                long_docs,
                max_bad_share,
            )
        manifest = assign_ids(dirs, tmp / "manifest.json", tmp / "dropped.npz", shard_size, dedup)
        for i, entry in enumerate(manifest["shard_plan"]):
            write_shard(dirs[entry["part"]], tmp / "dropped.npz", entry, tmp / shard_name(i))
        shutil.rmtree(tmp / "parts")
    return CorpusCounts(**{f.name: manifest[f.name] for f in fields(CorpusCounts)})


def shard_paths(corpus_dir: str | Path) -> list[Path]:
    """The corpus's shards, as its manifest lists them (stale files of an earlier corpus are not)."""
    shards = read_json(Path(corpus_dir) / "manifest.json")["shards"]
    return [Path(corpus_dir) / shard_name(i) for i in range(shards)]
