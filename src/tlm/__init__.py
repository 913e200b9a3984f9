"""tlm: Task-driven Language Modeling (Yao et al., ICML 2022) as a library behind a Snakemake workflow."""

__version__ = "0.2.0"
