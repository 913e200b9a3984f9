import json

import pandas as pd

from tlm.evaluate import summarize


def test_summary_is_mean_and_std_over_seeds_in_config_order(tmp_path):
    paths = []
    for run in ("tlm", "task_only", "tfidf"):
        for seed, acc in ((0, 0.5), (1, 0.7)):
            path = tmp_path / "metrics" / "t" / run / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            flops = None if run == "tfidf" else 1e12 * (seed + 1)
            path.write_text(
                json.dumps(
                    {
                        "test_accuracy": acc,
                        "test_macro_f1": acc,
                        "test_micro_f1": acc,
                        "dev_macro_f1": acc,
                        "train_flops": flops,
                        "train_tokens": None if flops is None else 10,
                        "external_docs": 0,
                        "external_bytes": 0,
                        "train_seconds": 2.0,
                        "device": "cpu",
                    }
                )
            )
            paths.append(path)
    table = summarize(paths, tmp_path / "s.md", tmp_path / "s.csv")
    assert table.run.tolist() == ["tlm", "task_only", "tfidf"]
    assert table.test_accuracy.tolist() == [0.6] * 3 and table.seeds.tolist() == [2] * 3
    assert round(table.test_accuracy_std[0], 4) == round(pd.Series([0.5, 0.7]).std(), 4)
    assert table.train_flops[0] == 1.5e12 and pd.isna(table.train_flops[2])
    md = (tmp_path / "s.md").read_text()
    assert "| t | tlm | 2 | 60.00 ± 14.14 |" in md and "| - |" in md
    assert pd.read_csv(tmp_path / "s.csv").shape[0] == 3


def test_runs_below_tfidf_near_chance_or_cut_short_are_flagged_with_a_cause(tmp_path):
    def diag(rising, start, end, best=2, steps=1000):
        return {
            "stage": "stage2",
            "steps": steps,
            "min_steps": 600,
            "evaluations": 3,
            "best_evaluation": 3 if rising else best,
            "still_rising": rising,
            "task_loss_start": start,
            "task_loss_end": end,
        }

    metrics = {
        "tfidf": {"kind": "tfidf", "test_macro_f1": 0.6, "test_accuracy": 0.6},
        "budget": {"test_macro_f1": 0.3, "test_accuracy": 0.3, "diagnostics": diag(True, 2.7, 1.0)},
        "stuck": {
            "test_macro_f1": 0.01,
            "test_accuracy": 0.07,
            "diagnostics": diag(False, 2.7, 2.6),
        },
        "good": {
            "test_macro_f1": 0.7,
            "test_accuracy": 0.7,
            "diagnostics": diag(False, 2.7, 0.3),
            "epochs": {"stage1": 15.0, "stage2": 4.0},
            "stopped_early": True,
        },
        "few_steps": {
            "test_macro_f1": 0.01,
            "test_accuracy": 0.07,
            "diagnostics": diag(False, 2.7, 2.6, steps=100),
        },
        "overfit": {
            "test_macro_f1": 0.3,
            "test_accuracy": 0.3,
            "diagnostics": diag(False, 2.7, 0.1),
        },
        "tiny_s": {
            "test_macro_f1": 0.7,
            "test_accuracy": 0.7,
            "diagnostics": diag(False, 2.7, 0.3),
            "external_docs": 150,
            "train_examples": 300,
        },
        "short": {
            "test_macro_f1": 0.7,
            "test_accuracy": 0.7,
            "diagnostics": diag(False, 2.7, 0.3),
            "epochs": {"stage1": 1.3, "stage2": 2.7},
            "stopped_early": False,
        },
    }
    paths = []
    for run, m in metrics.items():
        path = tmp_path / "metrics" / "t" / run / "seed0.json"
        path.parent.mkdir(parents=True)
        path.write_text(
            json.dumps(
                {
                    "test_micro_f1": m["test_accuracy"],
                    "dev_macro_f1": 0.5,
                    "train_flops": 1.0,
                    "train_tokens": 1,
                    "external_docs": 0,
                    "external_bytes": 0,
                    "train_seconds": 1.0,
                    "device": "cpu",
                    "test_majority_share": 1 / 15,
                    **m,
                }
            )
        )
        paths.append(path)
    table = summarize(paths, tmp_path / "s.md", tmp_path / "s.csv")
    flag = dict(zip(table.run, table.flag.fillna("")))
    assert flag["tfidf"] == "" and flag["good"] == ""
    assert (
        "below the tfidf baseline (30.00 vs 60.00" in flag["budget"]
        and "raise `stage2.epochs`" in flag["budget"]
    )
    assert "budget-limited" in flag["budget"]
    assert "near chance" in flag["stuck"] and "`stage2.learning_rate`" in flag["stuck"]
    # the same loss curve in fewer steps than the default floor: the steps, not the learning rate
    assert "likely too few steps" in flag["few_steps"] and "learning_rate" not in flag["few_steps"]
    assert "in 100 steps, under the default floor of 600" in flag["few_steps"]
    assert "too little labelled data" in flag["overfit"] and "`top_k`" in flag["overfit"]
    assert flag["tiny_s"].startswith(
        "retrieval found little: S holds 150 documents for 300 training examples"
    )
    assert flag["short"].startswith(
        "budget-limited: it went over the task data 1.3 times in stage1, 2.7 times in stage2"
    )
    assert "raise `stage2.epochs`" in flag["short"]
    md = (tmp_path / "s.md").read_text()
    assert "## Flags" in md and "- t / stuck: near chance" in md
