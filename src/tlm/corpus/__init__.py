"""Read a user's general corpus D (any size) as a stream and cut it into Parquet shards.

Memory stays bounded by one shard: documents are read in batches, written to the current shard's
Parquet writer and forgotten. Document ids are global, dense and stable: the i-th kept document of
the inputs (in the order given) gets doc_id i, so the same inputs always give the same ids.

Real corpora are messy, and one bad line should not stop a run of millions (nor pass silently):

* A document longer than `max_doc_chars` is cut into passages of at most that many characters (at
  a space), each a document of its own (`long_docs: split`), or cut to its first passage
  (`truncate`). An oversized document would otherwise dominate BM25 (every query retrieves it),
  S by bytes and the memory of every stage, while MLM reads only its first max_seq_length tokens.
  A line too long to hold (over LINE_CAP bytes, e.g. a whole dump on one line) is read as a
  stream, its text cut into passages as it arrives, so memory stays bounded by the cap.
* Lines that are not valid UTF-8, not JSON, not a JSON object, without the text field, or whose
  text is not a string are skipped and counted by cause in manifest.json; so are empty documents
  and, with dedup, exact duplicates. If more than `max_bad_share` of a file's records (and more
  than GRACE, or all of them) are malformed, checked after its first 1,000 and at its end, the
  job stops at once: a wrong `text_field` then fails on the first file, with the fields found.
* A truncated or corrupt file (gzip, Parquet) or an OS error while reading ends the job with one
  message naming the file and the fix; nothing is left under the output's name.

The modules: `records` (formats, what counts as a document, passages, the counts of what was
skipped and the check of a file's malformed share), `jsonscan` (the text field of a JSON line too
long to hold, streamed), `reading` (`iter_texts`: one file's documents), `shards` (the parts, the global
ids and deduplication, the shards: `shard_part`, `assign_ids`, `write_shard`, or `shard_corpus`
for all three in one process).
"""

from tlm.corpus.reading import iter_texts
from tlm.corpus.records import SKIPS, CorpusCounts, passages
from tlm.corpus.shards import (
    SHARD_SCHEMA,
    assign_ids,
    group_parts,
    shard_corpus,
    shard_part,
    shard_paths,
    write_shard,
)

__all__ = [
    "SHARD_SCHEMA",
    "SKIPS",
    "CorpusCounts",
    "assign_ids",
    "group_parts",
    "iter_texts",
    "passages",
    "shard_corpus",
    "shard_part",
    "shard_paths",
    "write_shard",
]
