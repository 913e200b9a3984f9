#!/usr/bin/env python3
"""Build two further real classification tasks from text that Debian packages, beside the demo's.

They measure training budgets and defaults on data the demo was not tuned on (README, "Training
budgets"); both retrieve from the demo corpus (data/demo/corpus). Outputs, relative to this folder:

  tasks/fortunes/{train,dev,test}.parquet   columns: text, label
      The topic of a fortune cookie (package `fortunes`, fortune-mod's data files), 12 classes:
      one file per label. Grab-bag files (cookie, fortunes, miscellaneous, a person's collection)
      are not labels. Texts filed under two labels, and exact repeats, are dropped. Balanced:
      280 train / 40 dev / 80 test per label.
  tasks/pydoc/{train,dev,test}.parquet      columns: text, label
      The chapter of the Python 3.11 library reference (package `python3.11-doc`) a documentation
      paragraph comes from ("Internet Protocols and Support", "Data Persistence", ...), 18 classes:
      the topical chapters with at least 6 module pages and 375 paragraphs ("Superseded Modules",
      which is not a topic, is left out). Split by module page, so no module is in two splits:
      a model must tell the chapter of modules it never saw. 200 train / 30 dev / 60 test per label.
  tasks/STATS.md                            provenance and statistics, generated.

Texts identical to a document of the demo corpus (whitespace collapsed) are dropped, so the
corpus holds none of the task's texts. The packages are fetched with `apt-get download` (no
root needed, nothing installed) into a temporary folder, or read from --debs.

Usage:  python data/build_tasks.py [--seed 0] [--debs DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
import subprocess
import tempfile
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
OUT = HERE / "tasks"
PACKAGES = ("fortunes", "python3.11-doc")
FORTUNE_LABELS = (
    "people",
    "definitions",
    "computers",
    "songs-poems",
    "politics",
    "work",
    "science",
    "men-women",
    "zippy",
    "platitudes",
    "art",
    "wisdom",
)
FORTUNE_SPLIT = {"train": 280, "dev": 40, "test": 80}
PYDOC_SPLIT = {"train": 200, "dev": 30, "test": 60}
PYDOC_MIN_PAGES, PYDOC_MIN_PARAGRAPHS = 6, 375
PYDOC_NOT_TOPICS = ("Superseded Modules",)
PYDOC_SKIP = (
    "Source code:",
    "New in version",
    "Changed in version",
    "Deprecated since",
    "Availability",
)


def collapse(text: str) -> str:
    return " ".join(text.split())


def fetch(debs: Path) -> dict[str, Path]:
    """The packages' .deb files (apt-get download where --debs has none), unpacked beside them."""
    found = {}
    for pkg in PACKAGES:
        have = sorted(debs.glob(f"{pkg}_*.deb"))
        if not have:
            subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True, capture_output=True)
            have = sorted(debs.glob(f"{pkg}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(have[-1]), str(debs / "root")], check=True)
        found[pkg] = have[-1]
    return found


def fortunes(root: Path) -> pd.DataFrame:
    """(text, label) of every fortune in the label files; entries end at a line holding only '%'."""
    rows = []
    for label in FORTUNE_LABELS:
        raw = (root / "usr/share/games/fortunes" / label).read_text(
            encoding="utf-8", errors="replace"
        )
        rows += [
            (collapse(entry), label)
            for entry in re.split(r"^%$", raw, flags=re.M)
            if collapse(entry)
        ]
    return pd.DataFrame(rows, columns=["text", "label"])


class _Paragraphs(HTMLParser):
    """The text of every <p> in a Sphinx page's body, code blocks left out."""

    def __init__(self):
        super().__init__()
        self.out, self.buf, self.skip = [], None, 0

    def handle_starttag(self, tag, attrs):
        if tag == "p":
            self.buf = []
        elif tag in ("pre", "script", "style"):
            self.skip += 1

    def handle_endtag(self, tag):
        if tag == "p" and self.buf is not None:
            self.out.append(collapse("".join(self.buf)))
            self.buf = None
        elif tag in ("pre", "script", "style"):
            self.skip -= 1

    def handle_data(self, data):
        if self.buf is not None and not self.skip:
            self.buf.append(data)


def _toc(page: Path) -> list[tuple[str, str]]:
    """(href, title) of a Sphinx page's first-level table of contents."""
    text = page.read_text(encoding="utf-8")
    if "toctree-wrapper" not in text:
        return []
    toc = text[text.index("toctree-wrapper") :]
    links = re.findall(
        r'<li class="toctree-l1"><a class="reference internal" href="([^"#]+)">(.*?)</a>', toc
    )
    return [(href, collapse(re.sub("<.*?>", "", html.unescape(title)))) for href, title in links]


def pydoc(root: Path) -> pd.DataFrame:
    """(text, label, page) of every body paragraph of the library reference's module pages;
    label: the chapter the page is listed under."""
    library = next((root / "usr/share/doc").glob("python3.*/html/library"))
    rows = []
    for chapter, title in _toc(library / "index.html"):
        for href, _ in _toc(library / chapter):
            page = library / href
            if not page.exists():
                continue
            text = page.read_text(encoding="utf-8")
            parser = _Paragraphs()
            parser.feed(
                text[text.find('<div class="body"') : text.find('<div class="sphinxsidebar"')]
            )
            rows += [
                (p, title, href)
                for p in parser.out
                if len(p) >= 40 and not p.startswith(PYDOC_SKIP)
            ]
    return pd.DataFrame(rows, columns=["text", "label", "page"])


def without(df: pd.DataFrame, corpus: set[bytes]) -> pd.DataFrame:
    """Drop texts of the demo corpus, texts under two labels, and repeats."""
    digest = df.text.map(lambda t: hashlib.blake2b(t.encode(), digest_size=16).digest())
    df = df[~digest.isin(corpus)]
    labels_per_text = df.groupby("text").label.nunique()
    df = df[df.text.map(labels_per_text) == 1]
    return df.drop_duplicates("text").reset_index(drop=True)


def balanced(df: pd.DataFrame, sizes: dict, rng) -> dict[str, pd.DataFrame]:
    """Per label, a random `sizes[split]` examples for each split."""
    splits = defaultdict(list)
    for _, group in df.groupby("label"):
        order = group.iloc[rng.permutation(len(group))]
        start = 0
        for split, n in sizes.items():
            splits[split].append(order.iloc[start : start + n])
            start += n
    return {
        s: pd.concat(parts).sample(frac=1, random_state=0).reset_index(drop=True)
        for s, parts in splits.items()
    }


def by_page(df: pd.DataFrame, sizes: dict, rng) -> dict[str, pd.DataFrame]:
    """Per label, whole module pages to test, then dev, then train (random order) until each split
    can give its size, then a random `sizes[split]` paragraphs of each: no page in two splits."""
    splits = defaultdict(list)
    for _, group in df.groupby("label"):
        pages = list(group.page.unique())
        order = [pages[i] for i in rng.permutation(len(pages))]
        assigned, split_names = defaultdict(list), ["test", "dev", "train"]
        for page in order:
            # the first split (test, dev, train) still short of its size takes the page; train takes the rest
            short = next(
                (
                    s
                    for s in split_names
                    if sum(len(group[group.page == p]) for p in assigned[s]) < sizes[s]
                ),
                "train",
            )
            assigned[short].append(page)
        for split, pages_ in assigned.items():
            part = group[group.page.isin(pages_)]
            splits[split].append(part.iloc[rng.permutation(len(part))[: sizes[split]]])
    return {
        s: pd.concat(splits[s]).sample(frac=1, random_state=0).reset_index(drop=True) for s in sizes
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--debs",
        type=Path,
        help="a folder with the packages' .deb files (default: apt-get download)",
    )
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    corpus = pd.concat(
        pd.read_parquet(p, columns=["text"])
        for p in sorted((HERE / "demo/corpus").glob("*.parquet"))
    )
    corpus_digests = set(
        corpus.text.map(lambda t: hashlib.blake2b(t.encode(), digest_size=16).digest())
    )

    with tempfile.TemporaryDirectory() as tmp:
        debs = args.debs or Path(tmp)
        found = fetch(debs)
        root = debs / "root"
        versions = {
            pkg: (deb.name, hashlib.sha256(deb.read_bytes()).hexdigest())
            for pkg, deb in found.items()
        }
        fortune = without(fortunes(root), corpus_digests)
        doc = without(pydoc(root), corpus_digests)

    per_label = doc.groupby("label").agg(paragraphs=("text", "size"), pages=("page", "nunique"))
    keep = per_label[
        (per_label.pages >= PYDOC_MIN_PAGES)
        & (per_label.paragraphs >= PYDOC_MIN_PARAGRAPHS)
        & ~per_label.index.isin(PYDOC_NOT_TOPICS)
    ].index
    tasks = {
        "fortunes": balanced(fortune, FORTUNE_SPLIT, rng),
        "pydoc": by_page(doc[doc.label.isin(keep)], PYDOC_SPLIT, rng),
    }

    lines = [
        "# Further tasks: generated statistics",
        "",
        "Written by `data/build_tasks.py`; do not edit by hand.",
        "",
        f"- Seed: {args.seed}; pandas {pd.__version__}, numpy {np.__version__}",
        "",
        "| package | file | sha256 |",
        "| --- | --- | --- |",
        *(f"| {pkg} | `{name}` | `{digest}` |" for pkg, (name, digest) in versions.items()),
        "",
    ]
    for name, splits in tasks.items():
        (OUT / name).mkdir(parents=True, exist_ok=True)
        for split, df in splits.items():
            df[["text", "label"]].to_parquet(
                OUT / name / f"{split}.parquet", compression="zstd", index=False
            )
        counts = (
            pd.DataFrame({s: df.label.value_counts() for s, df in splits.items()})
            .fillna(0)
            .astype(int)
        )
        words = splits["train"].text.str.split().str.len()
        lines += [
            f"## {name}",
            "",
            f"{len(counts)} labels; train words per text: median {int(words.median())}, mean {words.mean():.1f}.",
            "",
            "| label | train | dev | test |",
            "| --- | ---: | ---: | ---: |",
            *(f"| {label} | {r.train} | {r.dev} | {r.test} |" for label, r in counts.iterrows()),
            "",
        ]
    lines += [
        "## Candidates before balancing",
        "",
        "| task | label | texts | pages |",
        "| --- | --- | ---: | ---: |",
        *(f"| fortunes | {label} | {n} | |" for label, n in fortune.label.value_counts().items()),
        *(f"| pydoc | {label} | {r.paragraphs} | {r.pages} |" for label, r in per_label.iterrows()),
        "",
    ]
    (OUT / "STATS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
