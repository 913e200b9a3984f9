#!/usr/bin/env python3
"""Build the shipped TLM demo dataset from text that Debian itself packages.

Outputs (all Parquet, zstd-compressed), relative to this file's folder:

  demo/task/{train,dev,test}.parquet   columns: text, label
      Predict a Debian package's archive Section from its description.
      One binary package per Source package across the whole task, balanced
      per section (up to 240 train / 40 dev / 80 test for the 15 most common
      sections); every source appears in exactly one split.
  demo/corpus/part-NNN.parquet         columns: text, source
      Unlabelled in-domain/general English text for task-driven LM:
      package descriptions of sources NOT used by the task, GCIDE, WordNet
      glosses, FOLDOC, the Jargon File, and Linux man-pages paragraphs.
  demo/STATS.md                        provenance and statistics, generated.

Requirements (Debian 12 "bookworm", run as root once):

  apt-get update -o Acquire::Languages=en      # fetches i18n Translation-en
  apt-get install -y --no-install-recommends \\
      dict-gcide dict-foldoc dict-jargon wordnet-base manpages manpages-dev

plus Python 3 with pandas, pyarrow and numpy (stdlib otherwise).  The apt
list files are read with `/usr/lib/apt/apt-helper cat-file`, which
decompresses whatever compression apt stored them with (.lz4 here).

Usage:  python data/build_demo_data.py [--seed 0] [--budget-bytes 28000000]

The build is deterministic for a given seed and given input files (the
bookworm Packages/Translation-en lists change with Debian point releases;
STATS.md records the release and the sha256 of the lists that were used).
"""

from __future__ import annotations

import argparse
import codecs
import glob
import gzip
import hashlib
import os
import re
import subprocess
import sys
import time
import unicodedata
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "demo")
APT_LISTS = "/var/lib/apt/lists"
DICTD = "/usr/share/dictd"
WORDNET = "/usr/share/wordnet"

N_SECTIONS = 15
PER_SECTION = {"train": 240, "dev": 40, "test": 80}
MIN_TEXT_CHARS = 40
MIN_MAN_PARA_CHARS = 80
MIN_CORPUS_DOCS = 200_000
CORPUS_SHARD_ROWS = 100_000
ZSTD_LEVEL = 19
DEB_PACKAGES = [
    "dict-gcide",
    "dict-foldoc",
    "dict-jargon",
    "wordnet-base",
    "manpages",
    "manpages-dev",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def collapse(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------
# Debian archive metadata: Packages + Translation-en
# ---------------------------------------------------------------------------


def find_list(kind: str) -> str:
    """Path of the apt list file for bookworm main amd64 (kind: Packages or Translation-en)."""
    if kind == "Packages":
        pat = "*_dists_bookworm_main_binary-amd64_Packages*"
    else:
        pat = "*_dists_bookworm_main_i18n_Translation-en*"
    hits = sorted(
        p
        for p in glob.glob(os.path.join(APT_LISTS, pat))
        if not p.endswith((".diff_Index", "IndexDiff"))
    )
    if not hits:
        sys.exit(f"no {pat} under {APT_LISTS}: run `apt-get update -o Acquire::Languages=en`")
    return hits[0]


def read_list(path: str) -> str:
    """Decompress an apt list file (any compression apt uses) via apt-helper."""
    raw = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True
    ).stdout
    return raw.decode("utf-8", errors="replace")


def deb822_records(text: str):
    """Yield dicts of the fields of each stanza of a Packages/Translation file."""
    rec: dict[str, str] = {}
    key = None
    for line in text.split("\n"):
        if not line:
            if rec:
                yield rec
            rec, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                rec[key] += "\n" + line
        else:
            key, _, val = line.partition(":")
            rec[key] = val.strip()
    if rec:
        yield rec


def clean_description(desc_en: str) -> tuple[str, str]:
    """Split a Description-en field into (short, cleaned long description)."""
    short, _, long = desc_en.partition("\n")
    paras, cur = [], []
    for line in long.split("\n"):
        line = line[1:] if line.startswith(" ") else line  # drop the one leading space
        if line.strip() == ".":  # " ." = paragraph break
            paras.append(" ".join(cur))
            cur = []
        else:
            cur.append(line)
    paras.append(" ".join(cur))
    return collapse(short), collapse(" ".join(p for p in paras if p.strip()))


def description_text(short: str, long: str) -> str:
    sep = " " if short.endswith((".", "!", "?")) else ". "
    return short + sep + long


def load_packages() -> pd.DataFrame:
    """One row per bookworm main amd64 binary package with its English description."""
    tr = {}
    for r in deb822_records(read_list(find_list("Translation-en"))):
        if "Description-en" in r:
            tr[(r["Package"], r.get("Description-md5", ""))] = r["Description-en"]
    rows, unmatched = [], 0
    for r in deb822_records(read_list(find_list("Packages"))):
        desc = tr.get((r["Package"], r.get("Description-md5", "")))
        if desc is None:
            unmatched += 1
            continue
        short, long = clean_description(desc)
        source = r.get("Source", r["Package"]).split("(")[0].strip() or r["Package"]
        section = r.get("Section", "")
        section = section.split("/", 1)[1] if "/" in section else section
        rows.append((r["Package"], source, section, short, long, description_text(short, long)))
    df = pd.DataFrame(rows, columns=["package", "source", "section", "short", "long", "text"])
    # Packages may list a name twice (never in bookworm main, but be safe).
    df = df.drop_duplicates("package").sort_values("package", ignore_index=True)
    log(f"packages with an English description: {len(df)} (unmatched: {unmatched})")
    return df


def usable(df: pd.DataFrame) -> pd.Series:
    short = df["short"].str.lower()
    return (
        (df["long"].str.len() > 0)
        & (df["text"].str.len() >= MIN_TEXT_CHARS)
        & ~short.str.contains("transitional", regex=False)
        & ~short.str.contains("dummy package", regex=False)
    )


def build_task(pk: pd.DataFrame, seed: int):
    """Return {split: DataFrame(text,label)}, set of used sources, set of task texts."""
    ok = pk[usable(pk)]
    # One binary package per source, chosen with the seed.
    rng = np.random.default_rng([seed, 1])
    chosen = []
    for _, grp in ok.groupby("source", sort=True):
        chosen.append(grp.index[rng.integers(len(grp))])
    cand = ok.loc[chosen]
    # Identical texts under different sources would leak across splits: keep one.
    cand = cand.iloc[rng.permutation(len(cand))].drop_duplicates("text")
    counts = cand["section"].value_counts()
    counts = counts.reset_index().sort_values(["count", "section"], ascending=[False, True])
    top = list(counts["section"][:N_SECTIONS])
    log(
        "sources per section (one package per source): "
        + ", ".join(
            f"{s}={c}"
            for s, c in zip(counts["section"][: N_SECTIONS + 3], counts["count"][: N_SECTIONS + 3])
        )
    )
    splits = {k: [] for k in PER_SECTION}
    for sec in sorted(top):
        grp = cand[cand["section"] == sec].sort_values("source")
        grp = grp.iloc[rng.permutation(len(grp))]
        start = 0
        for split, n in PER_SECTION.items():
            splits[split].append(grp.iloc[start : start + n])
            start += n
    out, used_sources, texts = {}, set(), set()
    for split, parts in splits.items():
        df = pd.concat(parts)
        df = df.iloc[np.random.default_rng([seed, 2, len(out)]).permutation(len(df))]
        used_sources |= set(df["source"])
        texts |= set(df["text"])
        out[split] = df.rename(columns={"section": "label"})[["text", "label"]].reset_index(
            drop=True
        )
    return out, used_sources, texts, top, counts


# ---------------------------------------------------------------------------
# dictd databases (GCIDE, FOLDOC, Jargon File)
# ---------------------------------------------------------------------------

# A few stray Windows-1252 bytes (e.g. 0x92 for an apostrophe) occur in GCIDE.
codecs.register_error(
    "cp1252_fallback",
    lambda e: (e.object[e.start : e.end].decode("cp1252", errors="replace"), e.end),
)

B64 = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}


def b64num(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + B64[c]
    return n


def dictd_entries(name: str) -> list[str]:
    """Raw text of each distinct entry of a dictd database, in file order.

    Several index headwords can point at the same (offset, length); such an
    entry is returned once.  Entries reached only through 00-* headwords
    (the database's own header/licence blocks) are skipped.
    """
    heads = defaultdict(list)
    with open(os.path.join(DICTD, name + ".index"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            heads[(b64num(parts[1]), b64num(parts[2]))].append(parts[0])
    with gzip.open(os.path.join(DICTD, name + ".dict.dz")) as f:  # dictzip is gzip
        data = f.read()
    out = []
    for off, length in sorted(heads):
        if all(h.startswith("00-") for h in heads[(off, length)]):
            continue
        out.append(data[off : off + length].decode("utf-8", errors="cp1252_fallback"))
    return out


_GCIDE_SOURCE_TAG = re.compile(
    r"\[\s*(?:\+?\s*(?:\d{4}\s+Webster|Webster\s+\d{4}(?:\s+Suppl\.)?"
    r"|WordNet(?:\s+[\d.]+|\s+sense\s+\d+)?|PJC\.?|RDH|RHUD|MI11|AS|Century Dict\.\s*\d{4})\s*)+\]"
)
_COMBINING = {
    '"': "\u0308",
    "'": "\u0301",
    "`": "\u0300",
    "=": "\u0304",
    "~": "\u0303",
    ".": "\u0323",
    ",": "\u0327",
    "-": "\u0306",
    "^": "\u0302",
    "*": "\u030a",
}
_LIGATURE = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ"}
_GCIDE_NAMED = {
    "ae": "æ",
    "AE": "Æ",
    "oe": "œ",
    "OE": "Œ",
    "eth": "ð",
    "thorn": "þ",
    "imac": "ī",
    "aum": "ä",
    "add": "ȧ",
    "asl": "a",
    "udd": "ü",
    "ng": "ŋ",
    "root": "√",
    "deg": "°",
    "sect": "§",
    "yogh": "ȝ",
    "pounds": "£",
    "dsdot": "ḍ",
    "bprime": "″",
    "prime": "′",
    "sharp": "♯",
    "flat": "♭",
    "natural": "♮",
    "frac12": "½",
    "frac14": "¼",
    "frac34": "¾",
    "cir": "○",
    "ounce": "℥",
    "dram": "ʒ",
    "minim": "♏",
    "middot": "·",
    "divide": "÷",
    "times": "×",
    "para": "¶",
    "dagger": "†",
    "ddagger": "‡",
    "uml": "¨",
    "hand": "☞",
    "th": "th",
}
for _g in [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "chi",
    "psi",
    "omega",
]:
    _u = "LAMDA" if _g == "lambda" else _g.upper()  # Unicode spells it LAMDA
    _GCIDE_NAMED[_g] = unicodedata.lookup("GREEK SMALL LETTER " + _u)
    _GCIDE_NAMED[_g.capitalize()] = unicodedata.lookup("GREEK CAPITAL LETTER " + _u)


def _accent(base: str, mark: str) -> str:
    base = _LIGATURE.get(base, base)
    return base[0] + _COMBINING[mark] + base[1:]


def clean_gcide(entry: str) -> str:
    t = collapse(_GCIDE_SOURCE_TAG.sub(" ", entry))
    t = re.sub(r"\s*\\[^\\]{0,100}\\", "", t)  # \pro*nun"ci*a`tion\
    t = re.sub(r"\[([\"'`=~.,\-^*])([A-Za-z]{1,2})\]", lambda m: _accent(m[2], m[1]), t)
    t = re.sub(r"\[([A-Za-z]{1,2})\^\]", lambda m: _accent(m[1], "-"), t)  # [i^] = breve
    t = re.sub(r"\[([A-Za-z]+[0-9]*)\]", lambda m: _GCIDE_NAMED.get(m[1], m[0]), t)
    t = t.replace("{", "").replace("}", "")
    return unicodedata.normalize("NFC", collapse(t))


def clean_foldoc(entry: str) -> str:
    t = re.sub(r"\n\s*\(\d{4}-\d{2}-\d{2}\)\s*$", "", entry.rstrip())  # trailing edit date
    t = re.sub(r"<([^<>\n]{1,80})>", r"(\1)", t)  # <category>, <URL>
    return collapse(t.replace("{", "").replace("}", ""))


def clean_jargon(entry: str) -> str:
    t = re.sub(r"^( //,?)", "", entry, flags=re.M)  # empty pronunciation
    return collapse(t.replace("{", "").replace("}", ""))


# ---------------------------------------------------------------------------
# WordNet
# ---------------------------------------------------------------------------


def wordnet_docs() -> list[str]:
    docs = []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(WORDNET, "data." + pos), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                head, sep, gloss = line.partition(" | ")
                if not sep:
                    continue
                tok = head.split()
                n = int(tok[3], 16)
                words = [
                    re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in tok[4 : 4 + 2 * n : 2]
                ]
                docs.append(collapse(", ".join(words) + ": " + gloss))
    return docs


# ---------------------------------------------------------------------------
# Linux man-pages
# ---------------------------------------------------------------------------

_NAMED_CHARS = {
    "em": "—",
    "en": "–",
    "hy": "-",
    "aq": "'",
    "dq": '"',
    "lq": "“",
    "rq": "”",
    "oq": "‘",
    "cq": "’",
    "bu": "•",
    "mu": "×",
    "di": "÷",
    "co": "©",
    "rg": "®",
    "tm": "™",
    "de": "°",
    "ga": "`",
    "ti": "~",
    "ha": "^",
    "rs": "\\",
    "sl": "/",
    "ba": "|",
    "<=": "≤",
    ">=": "≥",
    "!=": "≠",
    "->": "→",
    "<-": "←",
    "+-": "±",
    "pl": "+",
    "mi": "-",
    "eq": "=",
    "**": "*",
    "Fo": "«",
    "Fc": "»",
    "fo": "‹",
    "fc": "›",
    "sc": "§",
    "ps": "¶",
    "ct": "¢",
    "Po": "£",
}
_ESCAPE = re.compile(
    r"\\(?:f(?:\[[^\]]*\]|\(..|.)"  # font change
    r"|\((..)"  # \(xx named char
    r"|\[([^\]]*)\]"  # \[name] named char
    r"|\*(?:\((..)|\[([^\]]*)\]|(.))"  # \*x string
    r"|s[-+]?\d+"  # size change
    r"|[hvwlLoDbxXNRSZ]'[^']*'"  # motions, widths, ...
    r"|[n$](?:\(..|\[[^\]]*\]|.)"  # number registers, macro arguments
    r"|(.))"
)
_SIMPLE_ESC = {
    "-": "-",
    "e": "\\",
    "\\": "\\",
    "~": " ",
    " ": " ",
    "0": " ",
    "'": "'",
    "`": "`",
    ".": ".",
}
_FONT_MACROS = {"B", "I", "SM", "SB"}
_ALT_MACROS = {"BR", "RB", "IR", "RI", "BI", "IB"}
_BREAK_MACROS = {
    "PP",
    "P",
    "LP",
    "sp",
    "br",
    "IP",
    "TP",
    "TQ",
    "HP",
    "RS",
    "RE",
    "in",
    "ti",
    "SH",
    "SS",
    "bp",
    "UR",
    "UE",
    "MT",
    "ME",
    "SY",
    "YS",
    "ce",
}
_SKIP_SECTIONS = {"SYNOPSIS", "SEE ALSO", "COLOPHON", "NAME"}


def _esc(m: re.Match) -> str:
    name = m[1] or m[2] or m[3] or m[4]
    if name is not None:
        return {"lq": "“", "rq": "”"}.get(name, _NAMED_CHARS.get(name, ""))
    if m[5] is not None:
        return ""
    if m[6] is not None:
        return _SIMPLE_ESC.get(m[6], "")
    return ""


def _macro_args(s: str) -> list[str]:
    return [
        a[1:-1] if a.startswith('"') and a.endswith('"') and len(a) > 1 else a
        for a in re.findall(r'"[^"]*"?|\S+', s)
    ]


def man_paragraphs(src: str) -> list[str]:
    """Very small troff-to-text converter: prose paragraphs of a man page."""
    paras, cur = [], []
    section, skip = "", False

    def flush():
        if cur:
            paras.append(collapse(" ".join(cur)))
            cur.clear()

    for line in src.split("\n"):
        if line.startswith(('.\\"', "'\\\"", '\\"', ".\\#")):
            continue
        if line[:1] in (".", "'"):
            m = re.match(r"[.'][ \t]*(\S*)[ \t]*(.*)", line)
            req, args = m[1], m[2]
            if req in ("TS", "EX", "nf", "EQ", "de", "de1", "am", "ig"):
                flush()
                skip = True
                continue
            if req in ("TE", "EE", "fi", "EN", "."):  # "." is the ".." ending a .de
                skip = False
                continue
            if skip:
                continue
            if req in _BREAK_MACROS:
                flush()
                if req == "SH":
                    section = " ".join(_macro_args(args)).upper()
                continue
            if req in _FONT_MACROS:
                line = " ".join(_macro_args(args))
            elif req in _ALT_MACROS:
                line = "".join(_macro_args(args))
            else:
                continue  # .TH, .so, .ad, .nh, .PD, unknown requests
        elif skip:
            continue
        if section in _SKIP_SECTIONS:
            continue
        cur.append(_ESCAPE.sub(_esc, line))
    flush()
    return paras


def manpage_docs() -> tuple[list[str], Counter, int]:
    files = []
    for pkg in ("manpages", "manpages-dev"):
        listed = subprocess.run(
            ["dpkg-query", "-L", pkg], check=True, capture_output=True, text=True
        ).stdout.split("\n")
        files += [
            p
            for p in listed
            if re.fullmatch(r"/usr/share/man/man[23457]/[^/]+\.gz", p)
            and os.path.isfile(p)
            and not os.path.islink(p)
        ]
    docs, licences, pages = [], Counter(), 0
    for path in sorted(set(files)):
        with gzip.open(path) as f:
            src = f.read().decode("utf-8", errors="replace")
        if re.match(r"\s*\.so\s", src.split("\n", 1)[0]) or len(src) < 200:
            continue  # a link to another page
        pages += 1
        spdx = re.search(r"SPDX-License-Identifier:\s*(.+)", src)
        licences[spdx[1].strip() if spdx else "(none given)"] += 1
        docs += [p for p in man_paragraphs(src) if len(p) >= MIN_MAN_PARA_CHARS]
    return docs, licences, pages


# ---------------------------------------------------------------------------
# Writing and statistics
# ---------------------------------------------------------------------------


def write_parquet(df: pd.DataFrame, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        use_dictionary=[c for c in ("label", "source") if c in df.columns],
    )


def write_corpus(corpus: pd.DataFrame) -> list[str]:
    cdir = os.path.join(OUT, "corpus")
    os.makedirs(cdir, exist_ok=True)
    for old in glob.glob(os.path.join(cdir, "*.parquet")):
        os.remove(old)
    paths = []
    for i, start in enumerate(range(0, len(corpus), CORPUS_SHARD_ROWS)):
        p = os.path.join(cdir, f"part-{i:03d}.parquet")
        write_parquet(corpus.iloc[start : start + CORPUS_SHARD_ROWS], p)
        paths.append(p)
    return paths


def words(s: pd.Series) -> float:
    return float(s.str.split().str.len().mean()) if len(s) else 0.0


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def release_info() -> str:
    path = find_list("Packages").split("_main_")[0] + "_InRelease"
    fields = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("Origin:", "Suite:", "Version:", "Codename:", "Date:")):
                    k, _, v = line.partition(":")
                    fields.setdefault(k, v.strip())
    return ", ".join(f"{k} {v}" for k, v in fields.items())


def dep5_licences(pkg: str) -> str:
    path = f"/usr/share/doc/{pkg}/copyright"
    if not os.path.exists(path):
        return "(no copyright file)"
    with open(path, encoding="utf-8", errors="replace") as f:
        lic = sorted({m.strip() for m in re.findall(r"^License:\s*(.+)$", f.read(), re.M)})
    return ", ".join(lic) if lic else "free-form text (not DEP-5); see README"


def write_stats(task, corpus, paths, top, sec_counts, man_licences, man_pages, seed, gcide_total):
    versions = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\n"] + DEB_PACKAGES,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    lines = [
        "# Demo data: generated statistics",
        "",
        "Written by `data/build_demo_data.py`; do not edit by hand.",
        "",
        f"- Seed: {seed}; pandas {pd.__version__}, pyarrow {pa.__version__}, numpy {np.__version__}",
        f"- Debian archive: {release_info()}",
        "",
    ]
    lines += ["## Inputs", "", "| apt list (bookworm main) | sha256 |", "| --- | --- |"]
    for kind in ("Packages", "Translation-en"):
        p = find_list(kind)
        lines.append(f"| `{os.path.basename(p)}` | `{sha256(p)}` |")
    lines += [
        "",
        "| package | version | License fields in /usr/share/doc/PKG/copyright |",
        "| --- | --- | --- |",
    ]
    for row in versions:
        if row:
            pkg, ver = row.split("\t")
            lines.append(f"| {pkg} | {ver} | {dep5_licences(pkg)} |")
    lines += [
        "",
        f"Man pages used: {man_pages} (man2/3/4/5/7 of manpages, manpages-dev, "
        "`.so` links skipped); their SPDX-License-Identifier headers:",
        "",
        "| SPDX identifier | pages |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in man_licences.most_common()]

    lines += [
        "",
        "## Files",
        "",
        "| file | rows | bytes | mean words/doc |",
        "| --- | ---: | ---: | ---: |",
    ]
    total = 0
    for split, df in task.items():
        p = os.path.join(OUT, "task", f"{split}.parquet")
        size = os.path.getsize(p)
        total += size
        lines.append(
            f"| `demo/task/{split}.parquet` | {len(df)} | {size} | {words(df['text']):.1f} |"
        )
    for p in paths:
        n = pq.ParquetFile(p).metadata.num_rows
        size = os.path.getsize(p)
        total += size
        lines.append(f"| `demo/corpus/{os.path.basename(p)}` | {n} | {size} | |")
    lines.append(f"| **total** | {sum(len(d) for d in task.values()) + len(corpus)} | {total} | |")

    lines += [
        "",
        "## Task: label distribution",
        "",
        "`candidates` = source packages of that section available before balancing (one usable binary package per source).",
        "",
        "| label | candidates | train | dev | test | mean words (train) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    vc = {s: d["label"].value_counts() for s, d in task.items()}
    cand = dict(zip(sec_counts["section"], sec_counts["count"]))
    tr = task["train"]
    for lab in sorted(top):
        lines.append(
            f"| {lab} | {cand[lab]} | "
            + " | ".join(str(int(vc[s].get(lab, 0))) for s in task)
            + f" | {words(tr['text'][tr['label'] == lab]):.1f} |"
        )
    lines.append(
        f"| **all** | {sum(cand[t] for t in top)} | "
        + " | ".join(str(len(d)) for d in task.values())
        + f" | {words(tr['text']):.1f} |"
    )
    rest = [f"{s} {c}" for s, c in zip(sec_counts["section"], sec_counts["count"]) if s not in top]
    lines += [
        "",
        f"Sections not used ({len(rest)}), with candidate counts: " + ", ".join(rest) + ".",
    ]

    lines += [
        "",
        "## Corpus: documents per source",
        "",
        "| source | docs | mean words/doc | chars |",
        "| --- | ---: | ---: | ---: |",
    ]
    for src, grp in corpus.groupby("source", sort=True):
        lines.append(
            f"| {src} | {len(grp)} | {words(grp['text']):.1f} | {int(grp['text'].str.len().sum())} |"
        )
    lines.append(
        f"| **all** | {len(corpus)} | {words(corpus['text']):.1f} | {int(corpus['text'].str.len().sum())} |"
    )
    if gcide_total is not None:
        lines += [
            "",
            f"GCIDE was subsampled to fit the size budget "
            f"(kept {int((corpus['source'] == 'gcide').sum())} of {gcide_total} entries).",
        ]
    with open(os.path.join(OUT, "STATS.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return total


# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--budget-bytes",
        type=int,
        default=28_000_000,
        help="upper bound on the total size of all Parquet files",
    )
    args = ap.parse_args()
    t0 = time.time()
    missing = [
        p
        for p in DEB_PACKAGES
        if subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status}", p], capture_output=True, text=True
        ).stdout
        != "install ok installed"
    ]
    if missing:
        sys.exit(
            "missing Debian packages: apt-get install -y --no-install-recommends "
            + " ".join(missing)
        )

    pk = load_packages()
    task, used_sources, task_texts, top, sec_counts = build_task(pk, args.seed)
    for split, df in task.items():
        write_parquet(df, os.path.join(OUT, "task", f"{split}.parquet"))
    log("task: " + ", ".join(f"{s}={len(d)}" for s, d in task.items()))

    parts = []
    # Descriptions of unused sources only; also drop any text that a used source's
    # package carries too (identical descriptions shared across source packages).
    used_texts = task_texts | set(pk.loc[pk["source"].isin(used_sources), "text"])
    desc = pk[usable(pk) & ~pk["source"].isin(used_sources) & ~pk["text"].isin(used_texts)]
    parts.append(("debian-descriptions", list(desc["text"])))
    log(f"descriptions: {len(desc)}")
    for name, clean in (("gcide", clean_gcide), ("foldoc", clean_foldoc), ("jargon", clean_jargon)):
        parts.append((name, [clean(e) for e in dictd_entries(name)]))
        log(f"{name}: {len(parts[-1][1])} entries")
    parts.append(("wordnet", wordnet_docs()))
    log(f"wordnet: {len(parts[-1][1])} synsets")
    man, man_licences, man_pages = manpage_docs()
    parts.append(("manpages", man))
    log(f"manpages: {len(man)} paragraphs from {man_pages} pages")

    corpus = pd.DataFrame([(t, s) for s, docs in parts for t in docs], columns=["text", "source"])
    corpus = corpus[corpus["text"].str.len() > 0].drop_duplicates("text", ignore_index=True)
    corpus = corpus.iloc[np.random.default_rng([args.seed, 3]).permutation(len(corpus))]
    corpus = corpus.reset_index(drop=True)

    task_bytes = sum(os.path.getsize(os.path.join(OUT, "task", f"{s}.parquet")) for s in task)
    # Random GCIDE keep-order, so that subsampling keeps a seeded random subset.
    is_g = (corpus["source"] == "gcide").to_numpy()
    g_rank = np.full(len(corpus), -1)
    g_rank[is_g] = np.random.default_rng([args.seed, 4]).permutation(int(is_g.sum()))
    gcide_total, keep = int(is_g.sum()), int(is_g.sum())
    full = corpus
    while True:
        corpus = full[(g_rank < keep) | ~is_g].reset_index(drop=True)
        paths = write_corpus(corpus)
        total = task_bytes + sum(os.path.getsize(p) for p in paths)
        log(f"corpus {len(corpus)} docs (gcide {keep}); total {total} bytes")
        if total <= args.budget_bytes:
            break
        g_bytes = total * (
            corpus["text"][corpus["source"] == "gcide"].str.len().sum()
            / corpus["text"].str.len().sum()
        )
        keep = int(keep - (total - args.budget_bytes) / (g_bytes / keep) * 1.03) - 1
        if keep <= 0:
            sys.exit("size budget cannot be met by subsampling GCIDE")
    if len(corpus) < MIN_CORPUS_DOCS:
        sys.exit(f"only {len(corpus)} corpus documents (< {MIN_CORPUS_DOCS})")
    total = write_stats(
        task,
        corpus,
        paths,
        top,
        sec_counts,
        man_licences,
        man_pages,
        args.seed,
        gcide_total if keep < gcide_total else None,
    )
    log(f"done in {time.time() - t0:.0f} s; {total} bytes in all; stats in {OUT}/STATS.md")


if __name__ == "__main__":
    main()
