"""The whole workflow on a tiny config in a temporary directory: artefacts, reruns, clear errors."""

import json
import re
import subprocess

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ROOT, SNAKEMAKE, smk, tiny_config, write_config


def planned_rules(tmp) -> set[str]:
    out = smk(tmp, "-n").stdout
    return set(re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):", out, flags=re.M)) - {
        "all"
    }  # group jobs indent theirs


SCHEMAS = {
    "corpus/shard-00000.parquet": {"doc_id": "int64", "text": "string"},
    "tasks/demo/test.parquet": {"text": "string", "label": "string"},
    "retrieval/demo/queries.parquet": {"query_id": "int64", "text": "string"},
    "retrieval/demo/hits-00000.parquet": {
        "query_id": "int64",
        "doc_id": "int64",
        "score": "float",
        "rank": "int32",
    },
    "retrieval/demo/topk.parquet": {
        "query_id": "int64",
        "doc_id": "int64",
        "score": "float",
        "rank": "int32",
    },
    "retrieval/demo/external.parquet": {"doc_id": "int64", "text": "string", "best_rank": "int32"},
    "retrieval/demo/random.parquet": {"doc_id": "int64", "text": "string", "best_rank": "int32"},
    "tasks/demo/train.parquet": {"text": "string", "label": "string"},
}


def test_every_artefact_exists_with_its_schema(done):
    res = done / "results"
    for rel, columns in SCHEMAS.items():
        schema = pq.read_schema(res / rel)
        assert {f.name: str(f.type) for f in schema} == columns, rel
    assert len(list((res / "corpus").glob("shard-*.parquet"))) == 3
    assert len(list((res / "retrieval" / "demo").glob("hits-*.parquet"))) == 3
    topk = pd.read_parquet(res / "retrieval/demo/topk.parquet")
    assert topk.groupby("query_id").size().max() <= 5
    external = pd.read_parquet(res / "retrieval/demo/external.parquet")
    assert set(external.doc_id) == set(topk.doc_id)
    assert len(pd.read_parquet(res / "retrieval/demo/random.parquet")) == len(external)
    for run in ("tlm", "task_only", "random", "no_stage2"):
        for stage in ("stage1", "stage2"):
            ckpt = res / "models/demo" / run / "seed0" / stage
            if run == "no_stage2" and stage == "stage2":
                assert not ckpt.exists()
                continue
            assert (ckpt / "config.json").exists() and (ckpt / "model.safetensors").exists()
            assert (ckpt / "train_log.csv").exists()
        metrics = json.loads((res / "metrics/demo" / run / "seed0.json").read_text())
        assert 0 <= metrics["test_macro_f1"] <= 1 and metrics["train_flops"] > 0
        assert (metrics["external_docs"] == 0) == (run == "task_only")
        assert (metrics["stage2_steps"] == 0) == (run == "no_stage2")
    tfidf = json.loads((res / "metrics/demo/tfidf/seed0.json").read_text())
    assert 0 <= tfidf["test_macro_f1"] <= 1 and tfidf["train_flops"] is None
    summary = pd.read_csv(res / "summary.csv")
    assert summary.run.tolist() == [
        "tlm",
        "task_only",
        "random",
        "no_stage2",
        "tlm_k2",
        "tfidf",
        "plm",
        "plm_tlm",
    ]
    plm = json.loads((res / "metrics/demo/plm/seed0.json").read_text())
    assert plm["stage1_steps"] == 0 and plm["stage2_steps"] == 4 and plm["train_flops"] > 0
    assert plm["parameters"] < 100_000 and plm["pretraining"] == "none (random)"
    assert not (res / "models/demo/plm/seed0/stage1").exists()
    plm_tlm = json.loads((res / "metrics/demo/plm_tlm/seed0.json").read_text())
    assert (
        plm_tlm["stage1_steps"] == 8
        and plm_tlm["stage2_steps"] == 4
        and plm_tlm["parameters"] == plm["parameters"]
    )
    assert plm_tlm["train_flops"] > plm["train_flops"] and plm_tlm["external_docs"] == len(external)
    stage1 = json.loads((res / "models/demo/plm_tlm/seed0/stage1/train_result.json").read_text())
    assert stage1["mlm_head"] == "new"
    assert (
        stage1["settings"]["stage1"]["learning_rate"] == 1e-3
    )  # the config's own, over the preset's
    assert (
        res / "models/demo/plm_tlm/tokens/external"
    ).is_dir()  # S in the checkpoint's vocabulary
    k2 = json.loads((res / "metrics/demo/tlm_k2/seed0.json").read_text())
    assert k2["external_docs"] == (external.best_rank <= 2).sum() < len(external), (
        "K ablation: S cut at rank 2"
    )
    assert (summary.seeds == 1).all() and (summary.test_macro_f1_std == 0).all()
    md = (res / "summary.md").read_text()
    assert "macro-F1" in md and " ± " in md and "plm: train FLOPs count the fine-tuning only" in md
    assert "plm_tlm: train FLOPs count the training from the checkpoint only" in md
    assert (done / "logs" / "train_stage1" / "demo" / "tlm" / "seed0.log").stat().st_size > 0


def test_second_run_has_nothing_to_do(done):
    assert "Nothing to be done" in smk(done, "-n").stdout


USE = ("package_model", "export_best", "predict")  # what follows a retrained model


def test_the_summary_is_shown_only_when_the_run_made_it(done):
    """A partial target must not show the previous run's summary as if it were new."""
    page = smk(done, "results/report/demo/retrieval.html", "--forcerun", "retrieval_report").stdout
    assert "# TLM results" not in page
    assert "# TLM results" in smk(done, "results/summary.md", "--forcerun", "summarize").stdout


def test_changing_a_setting_reruns_only_what_depends_on_it(done):
    original = (done / "config.yaml").read_text()
    try:
        cfg = yaml.safe_load(original)
        cfg["stage2"]["learning_rate"] = 5e-4
        write_config(done, cfg)
        # no_stage2 and tfidf kept; plm fine-tunes with the stage2 settings
        assert planned_rules(done) == {
            "train_stage2",
            "finetune_plm",
            "evaluate",
            "summarize",
            "plot_task",
            *USE,
        }

        cfg = yaml.safe_load(original)
        cfg["stage1"]["learning_rate"] = 5e-4
        write_config(done, cfg)
        assert planned_rules(done) == {
            "train_stage1",
            "train_stage2",
            "evaluate",
            "summarize",
            "plot_task",
            *USE,
        }

        cfg = yaml.safe_load(original)
        cfg["tasks"]["demo"]["top_k"] = 3
        write_config(done, cfg)
        assert planned_rules(done) == {
            "retrieve",
            "merge_topk",
            "select_external",
            "select_random",
            "train_tokenizer",
            "tokenize",
            "tokenize_plm",  # S in plm_tlm's vocabulary
            "train_stage1",
            "train_stage2",
            "evaluate",
            "summarize",
            "plot_task",
            "retrieval_report",
            *USE,
        }
    finally:
        (done / "config.yaml").write_text(original)


def test_wrong_config_type_is_reported_with_file_and_key(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["stage1"]["max_steps"] = "many"
    write_config(tmp_path, cfg)
    proc = smk(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr  # Snakemake prints workflow errors on stdout
    assert proc.returncode != 0
    assert "config.yaml: invalid configuration" in out
    assert "`stage1.max_steps` must be of type integer, got 'many' (str)" in out
    assert "Traceback" not in out


def test_a_missing_split_or_a_file_to_predict_without_text_stops_the_workflow_at_start(tmp_path):
    """Checked when the workflow starts (with top_k set nothing else reads the splits then), not
    by the job that first reads them: a file to predict is read only after every training."""
    cfg = tiny_config(tmp_path)
    cfg["tasks"]["demo"] |= {"top_k": 5, "dev": str(tmp_path / "task" / "nope.parquet")}
    write_config(tmp_path, cfg)
    proc = smk(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out and "MissingInput" not in out
    assert "task/nope.parquet: file not found. Fix: correct the path" in out
    pd.DataFrame({"sentence": ["a new text"]}).to_csv(tmp_path / "new.csv", index=False)
    cfg["tasks"]["demo"] |= {
        "dev": cfg["tasks"]["demo"]["test"],
        "predict": str(tmp_path / "new.csv"),
    }
    write_config(tmp_path, cfg)
    proc = smk(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "new.csv: missing column(s) ['text'] (found ['sentence'])" in out


def test_unknown_test_label_fails_with_a_clear_message(tmp_path):
    tiny_config(tmp_path)
    test = pd.read_parquet(tmp_path / "task" / "test.parquet")
    test.loc[0, "label"] = "no-such-section"
    test.to_parquet(tmp_path / "task" / "test.parquet")
    proc = smk(tmp_path, "results/tasks/demo/labels.json", check=False)
    assert proc.returncode != 0
    assert (
        "task/test.parquet: labels not seen in train: ['no-such-section']"
        in proc.stdout + proc.stderr
    )
    assert not (tmp_path / "results" / "tasks" / "demo" / "labels.json").exists()


def test_missing_corpus_is_named(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["corpus"]["paths"] = ["nowhere/*.jsonl"]
    write_config(tmp_path, cfg)
    proc = smk(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "'nowhere/*.jsonl' matches no file" in proc.stdout + proc.stderr
    cfg["corpus"]["paths"] = ["corpus"]  # a folder: its files are a glob
    write_config(tmp_path, cfg)
    proc = smk(tmp_path, "-n", check=False)
    assert (
        "'corpus' is a folder. Fix: give its files as a glob, e.g. 'corpus/*.jsonl'" in proc.stdout
    )
    cfg["corpus"]["paths"] = [
        "corpus/*.parquet",
        "corpus/a.parquet",
    ]  # read twice: every document counted twice
    write_config(tmp_path, cfg)
    proc = smk(tmp_path, "-n", check=False)
    assert (
        proc.returncode != 0
        and "corpus.paths: 'corpus/a.parquet' is listed twice" in proc.stdout + proc.stderr
    )


def test_missing_pretrained_checkpoint_is_named_with_the_fix(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["runs"]["plm"]["pretrained"] = "no_such_checkpoint"
    write_config(tmp_path, cfg)
    proc = smk(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert (
        proc.returncode != 0
        and "runs.plm.pretrained = 'no_such_checkpoint'" in out
        and "pip install -e '.[plm]'" in out
    )


def test_report_has_the_table_the_plots_and_the_retrieval_page(done):
    for name in ("quality_vs_flops", "training_curves", "runs"):
        assert (done / "results/plots/demo" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    page = (done / "results/report/demo/retrieval.html").read_text()
    assert "|S| share of the corpus" in page and "<ol>" in page
    smk(done, "--report", "results/report.html")
    report = (done / "results/report.html").read_text(errors="replace")
    for name in (
        "summary.md",
        "quality_vs_flops.png",
        "training_curves.png",
        "runs.png",
        "retrieval.html",
    ):
        assert name in report, name


@pytest.mark.parametrize("run", ["tlm", "task_only", "plm", "plm_tlm"])
def test_trained_models_load_with_plain_transformers_and_predict_as_the_workflow(done, run):
    """No project code and no remote code: the model directory loads as AutoModelForSequenceClassification
    with AutoTokenizer, with the task's label names, and pipeline() gives the workflow's test predictions."""
    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    model_dir = done / "results/models/demo" / run / "seed0/model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    labels = json.loads((done / "results/tasks/demo/labels.json").read_text())["labels"]
    assert [model.config.id2label[i] for i in range(len(labels))] == labels
    assert model.config.label2id == {label: i for i, label in enumerate(labels)}
    ours = pd.read_parquet(done / "results/metrics/demo" / run / "seed0-test.parquet")
    texts = pd.read_parquet(done / "results/tasks/demo/test.parquet")["text"].tolist()
    classify = pipeline(
        "text-classification",
        model=str(model_dir),
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
    )
    out = classify(texts, truncation=True, top_k=None, batch_size=8)
    theirs = np.array(
        [[{d["label"]: d["score"] for d in row}[label] for label in labels] for row in out]
    )
    assert [max(row, key=lambda d: d["score"])["label"] for row in out] == ours["label"].tolist()
    np.testing.assert_allclose(
        theirs, ours[[f"prob_{label}" for label in labels]].to_numpy(), atol=1e-5
    )

    card = (model_dir / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification")
    for part in (
        "## Labels",
        "## Training data",
        "## Training",
        "## Results (test split)",
        "## Use",
        "## Intended use and limits",
        "## How it was made",
        "truncation=True",
        *labels,
    ):
        assert part in card, part
    if run.startswith("plm"):  # the base model named
        assert f"the pretrained checkpoint `{done / 'encoder'}`" in card
    meta = yaml.safe_load(card.split("---\n")[1])
    assert (meta["license"], meta["language"], meta["datasets"]) == ("other", ["en"], ["demo"])
    assert meta["metrics"] == ["accuracy", "f1"]
    assert meta.get("base_model") == (str(done / "encoder") if run.startswith("plm") else None)
    assert len(meta["tags"]) == len(set(meta["tags"]))
    assert json.loads((model_dir / "metrics.json").read_text())["test_macro_f1"] == pytest.approx(
        json.loads((done / "results/metrics/demo" / run / "seed0.json").read_text())[
            "test_macro_f1"
        ]
    )


@pytest.mark.parametrize("run", ["tlm", "plm_tlm"])
def test_stage1_encoder_loads_as_a_masked_lm(done, run):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    stage1 = done / "results/models/demo" / run / "seed0/stage1"
    mlm, tok = AutoModelForMaskedLM.from_pretrained(stage1), AutoTokenizer.from_pretrained(stage1)
    ids = tok(["a [MASK] package"], return_tensors="pt")
    assert mlm(**ids).logits.shape == (1, ids["input_ids"].shape[1], len(tok))


def test_predictions_on_new_texts_and_the_exported_model(done):
    pred = pd.read_parquet(done / "results/predictions/demo/tlm/seed0.parquet")
    labels = json.loads((done / "results/tasks/demo/labels.json").read_text())["labels"]
    assert list(pred.columns) == ["file", "row", "label", *(f"prob_{label}" for label in labels)]
    assert pred.file.unique().tolist() == ["task/new.csv", "task/new.jsonl"]
    assert pred.groupby("file").row.apply(list).tolist() == [
        list(range(30)),
        list(range(len(pred) - 30)),
    ]
    test = pd.read_parquet(done / "results/metrics/demo/tlm/seed0-test.parquet")
    assert pred.label.tolist() == test.label.tolist(), (
        "the same texts get the test split's predictions"
    )
    probs = pred[[f"prob_{label}" for label in labels]].to_numpy()
    assert abs(probs.sum(1) - 1).max() < 1e-5
    for run in ("task_only", "random", "no_stage2", "tlm_k2", "plm", "plm_tlm"):
        assert (done / "results/predictions/demo" / run / "seed0.parquet").exists()

    export = done / "results/export/demo"
    choice = json.loads((export / "selection.json").read_text())
    dev = {
        run: json.loads((done / f"results/metrics/demo/{run}/seed0.json").read_text())[
            "dev_macro_f1"
        ]
        for run in ("tlm", "task_only", "random", "no_stage2", "tlm_k2", "plm", "plm_tlm")
    }
    assert choice["run"] in dev and dev[choice["run"]] == max(dev.values())
    assert (export / "README.md").exists() and (export / "model.safetensors").exists()
    # the tiny workflow's models (8 steps) are flagged in the summary; the model card says the same
    summary = pd.read_csv(done / "results/summary.csv").set_index("run")
    card = (export / "README.md").read_text()
    assert (
        f"**Quality warning** (the workflow's summary flags this run): {summary.flag[choice['run']].split('. ')[0]}"
        in card
    )


def test_a_users_config_means_exactly_what_it_says(tmp_path):
    """A bare `snakemake` runs the embedded demo; `--configfile my.yaml` runs my.yaml alone."""
    cfg = tiny_config(tmp_path)
    cfg["corpus"]["paths"] = [
        str(tmp_path / p) for p in cfg["corpus"]["paths"]
    ]  # run from the repository
    cfg["tasks"]["demo"] |= {
        s: str(tmp_path / f"task/{s}.parquet") for s in ("train", "dev", "test")
    }
    del cfg["tasks"]["demo"]["predict"]
    write_config(tmp_path, cfg)
    base = [*SNAKEMAKE, "-n", "--forceall", "--nolock", "--directory", str(ROOT)]
    demo = subprocess.run(base, capture_output=True, text=True, timeout=300).stdout
    assert "results/tasks/debian_sections/train.parquet" in demo
    mine = subprocess.run(
        [*base, "--configfile", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert "results/tasks/demo/train.parquet" in mine and "debian_sections" not in mine


def test_predictions_keep_blank_rows_in_place(tmp_path, done):
    """A blank or whitespace-only row keeps its row number with a null label; the rows after it keep
    theirs, with the labels their texts get without the blanks."""
    from tlm.predict import predict_files

    model = done / "results/models/demo/tlm/seed0/model"
    texts = pd.read_parquet(done / "task/test.parquet").text.head(4).tolist()
    (tmp_path / "new.csv").write_text("text\n" + "\n".join(f'"{t}"' for t in texts) + "\n")
    (tmp_path / "gaps.csv").write_text(
        f'text\n"{texts[0]}"\n\n   \n"{texts[1]}"\n""\n"{texts[2]}"\n"{texts[3]}"\n'
    )
    for name in ("new.csv", "gaps.csv"):
        predict_files(model, [str(tmp_path / name)], "text", tmp_path / f"{name}.parquet")
    plain, gaps = (
        pd.read_parquet(tmp_path / f"{name}.parquet") for name in ("new.csv", "gaps.csv")
    )
    assert gaps.row.tolist() == list(range(7))
    assert gaps.label.isna().tolist() == [False, True, True, False, True, False, False]
    assert gaps.label.dropna().tolist() == plain.label.tolist()
    assert gaps.filter(like="prob_").iloc[[1, 2, 4]].isna().all().all()


def test_a_key_given_twice_in_a_config_file_stops_the_workflow(tmp_path):
    """Snakemake keeps the last of two keys; the workflow reads its config files again, strictly."""
    tiny_config(tmp_path)
    with open(tmp_path / "config.yaml", "a") as f:
        f.write("seeds: [1]\n")
    proc = smk(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config.yaml, line" in out and "`seeds` is given twice" in out


def test_a_model_folder_without_its_weights_says_how_to_rebuild_it(tmp_path, done):
    import shutil

    from tlm.io import TLMInputError
    from tlm.predict import predict_files

    model = tmp_path / "results/models/demo/tlm/seed0/model"
    shutil.copytree(done / "results/models/demo/tlm/seed0/model", model)
    (model / "model.safetensors").unlink()
    with pytest.raises(
        TLMInputError,
        match=f"{model}: not a complete model checkpoint .* Fix: delete the folder {model}",
    ):
        predict_files(model, [str(done / "task/new.csv")], "text", tmp_path / "out.parquet")


def test_bad_predict_files_get_a_clear_error(tmp_path, done):
    from tlm.io import TLMInputError
    from tlm.predict import predict_files

    model = done / "results/models/demo/tlm/seed0/model"
    pd.DataFrame({"sentence": ["a b"]}).to_csv(tmp_path / "wrong.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    pd.DataFrame({"text": []}, dtype=str).to_parquet(tmp_path / "none.parquet")
    for name, message in (
        ("wrong.csv", r"missing column\(s\) \['text'\]"),
        ("empty.csv", "the file is empty"),
        ("none.parquet", "no rows to predict"),
    ):
        with pytest.raises(TLMInputError, match=message) as err:
            predict_files(model, [str(tmp_path / name)], "text", tmp_path / "out.parquet")
        assert name in str(err.value) and "Fix:" in str(err.value)
        assert not (tmp_path / "out.parquet").exists()
