"""Figures and retrieval statistics for Snakemake's report (snakemake --report results/report.html)."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tlm.io import atomic_path, read_json  # noqa: E402


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def run_curves(stage_dirs: list) -> pd.DataFrame:
    """All training logs of a task: one row per step, with run, seed, stage and FLOPs so far
    (stage 2's FLOPs continue from the end of its stage 1)."""
    frames, stage1_flops = [], {}
    for d in sorted(map(Path, stage_dirs), key=lambda p: p.name):  # stage1 before stage2
        run, seed = d.parent.parent.name, d.parent.name
        log = pd.read_csv(d / "train_log.csv")
        offset = stage1_flops.get((run, seed), 0) if d.name == "stage2" else 0
        log["total_flops"] = log["flops"] + offset
        if d.name == "stage1":
            stage1_flops[(run, seed)] = int(log["flops"].iloc[-1])
        frames.append(log.assign(run=run, seed=seed, stage=d.name))
    return pd.concat(frames, ignore_index=True)


def plot_quality_vs_flops(curves: pd.DataFrame, summary: pd.DataFrame, task: str, path) -> None:
    """Dev macro-F1 against training FLOPs (log scale) while each run trains (mean ± std over
    seeds), and its final test macro-F1: where, if anywhere, TLM overtakes training on the task alone."""
    fig, ax = plt.subplots(figsize=(8, 5))
    dev = curves.dropna(subset=["dev_macro_f1"])
    # one line per run: the mean over seeds at each evaluation (same steps in every seed), ± std
    points = dev.groupby(["run", "stage", "step"], sort=False).agg(
        flops=("total_flops", "mean"),
        f1=("dev_macro_f1", "mean"),
        sd=("dev_macro_f1", "std"),
        seeds=("seed", "size"),
    )
    for run, g in points.reset_index().groupby("run", sort=False):
        (line,) = ax.plot(
            g["flops"], 100 * g["f1"], marker=".", label=f"{run} (dev, {g['seeds'].max()} seeds)"
        )
        ax.fill_between(
            g["flops"],
            100 * (g["f1"] - g["sd"].fillna(0)),
            100 * (g["f1"] + g["sd"].fillna(0)),
            color=line.get_color(),
            alpha=0.15,
        )
    final = summary[(summary.task == task) & summary.train_flops.notna()]
    ax.errorbar(
        final["train_flops"],
        100 * final["test_macro_f1"],
        yerr=100 * final["test_macro_f1_std"],
        fmt="k*",
        ms=10,
        label="test (mean ± std)",
    )
    for row in final.itertuples():
        ax.annotate(
            row.run,
            (row.train_flops, 100 * row.test_macro_f1),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set(
        xlabel="training FLOPs (stage 1 + stage 2)",
        ylabel="macro-F1 (%)",
        title=f"{task}: quality vs compute",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_training_curves(curves: pd.DataFrame, task: str, path) -> None:
    """Loss per step: MLM on external batches, MLM and task loss on task batches, by stage."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [
        ("stage1", "external", "mlm_loss", "stage 1: MLM loss, external batches"),
        ("stage1", "task", "mlm_loss", "stage 1: MLM loss, task batches"),
        ("stage2", "task", "task_loss", "stage 2: task loss"),
    ]
    for ax, (stage, kind, column, title) in zip(axes, panels):
        sel = curves[(curves.stage == stage) & (curves.batch == kind)].dropna(subset=[column])
        for (run, seed), g in sel.groupby(["run", "seed"], sort=False):
            smooth = g[column].rolling(20, min_periods=1).mean()
            ax.plot(g["step"], smooth, label=f"{run} {seed}")
        ax.set(title=title, xlabel="step", ylabel=column.replace("_", " "))
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.suptitle(f"{task}: training curves (20-step moving average)")
    _save(fig, path)


def plot_runs(summary: pd.DataFrame, task: str, path) -> None:
    """Test macro-F1 (mean ± std over seeds) of every run: the ablations side by side."""
    rows = summary[summary.task == task]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 4))
    ax.bar(
        rows["run"],
        100 * rows["test_macro_f1"],
        yerr=100 * rows["test_macro_f1_std"],
        capsize=4,
        color="tab:blue",
    )
    ax.set(ylabel="test macro-F1 (%)", title=f"{task}: runs and ablations")
    ax.grid(axis="y", alpha=0.3)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    _save(fig, path)


def retrieval_report(
    task: str,
    train_path,
    queries_path,
    topk_path,
    external_path,
    manifest_path,
    path,
    examples: int = 5,
    show: int = 3,
) -> dict:
    """|S|, its share of the corpus, how much the queries' neighbours overlap, and the top
    documents of a few task examples, as an HTML page."""
    train = pd.read_parquet(train_path)
    queries = pd.read_parquet(queries_path)
    topk = pd.read_parquet(topk_path)
    external = pd.read_parquet(external_path)
    corpus_docs = read_json(manifest_path)["documents"]
    queries_per_doc = topk.groupby("doc_id").size()
    stats = {
        "task examples (queries)": len(queries),
        "queries with at least one hit": int(topk["query_id"].nunique()),
        "hits (query, document) pairs": len(topk),
        "|S| documents": len(external),
        "|S| share of the corpus": f"{100 * len(external) / corpus_docs:.2f}% of {corpus_docs:,}",
        "|S| MB (UTF-8 text)": f"{external['text'].map(lambda t: len(t.encode())).sum() / 1e6:.1f}",
        "documents retrieved by more than one query": f"{100 * (queries_per_doc > 1).mean():.1f}%",
        "mean queries per retrieved document": f"{queries_per_doc.mean():.2f}",
        "most-retrieved document: queries": int(queries_per_doc.max()),
    }
    labels = train["label"].to_numpy()
    same = []  # share of a document's queries that carry the label it was most often retrieved for
    for ids in topk.groupby("doc_id")["query_id"].agg(list):
        counts = pd.Series(labels[ids]).value_counts()
        same.append(counts.iloc[0] / counts.sum())
    stats["label purity of retrieved documents"] = f"{100 * np.mean(same):.1f}%"
    texts = external.set_index("doc_id")["text"]
    rng = np.random.default_rng(0)
    picked = rng.choice(len(queries), size=min(examples, len(queries)), replace=False)
    parts = [f"<h2>Retrieval for {html.escape(task)}</h2><table>"]
    parts += [
        f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in stats.items()
    ]
    parts.append("</table><h3>Examples: a task text, its query and its top documents</h3>")
    for q in sorted(picked):
        hits = topk[topk.query_id == q].head(show)
        parts.append(
            f"<p><b>[{html.escape(labels[q])}]</b> {html.escape(train['text'].iloc[q][:400])}<br>"
            f"<i>query:</i> {html.escape(queries['text'].iloc[q][:300])}</p><ol>"
        )
        parts += [
            f"<li>({h.score:.2f}) {html.escape(texts[h.doc_id][:300])}</li>"
            for h in hits.itertuples()
        ]
        parts.append("</ol>")
    with atomic_path(path) as tmp:
        tmp.write_text("<html><body>" + "\n".join(parts) + "</body></html>\n")
    return stats
