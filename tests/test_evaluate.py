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
