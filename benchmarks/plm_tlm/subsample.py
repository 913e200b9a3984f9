"""A 300-row training split of the demo task, the same on every machine (config/plm_tlm.yaml's
debian_sections_300): the first rows of a seeded shuffle, so every label keeps about its share.

    python benchmarks/plm_tlm/subsample.py [--rows 300] [--seed 0]
"""

import argparse
from pathlib import Path

import pandas as pd

from tlm.io import atomic_path

ROOT = Path(__file__).resolve().parents[2]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=Path, default=ROOT / "data/demo/task/train.parquet")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/plm_tlm/train-300.parquet")
    args = parser.parse_args()
    rows = (
        pd.read_parquet(args.train)
        .sample(n=args.rows, random_state=args.seed)
        .reset_index(drop=True)
    )
    with atomic_path(args.out) as tmp:
        rows.to_parquet(tmp, index=False)
    print(f"{args.out}: {len(rows)} rows, {rows.label.nunique()} labels")
