from tlm.baselines import tfidf_baseline
from tlm.io import write_json


def test_tfidf_baseline_learns_the_demo_task(tmp_path, demo_task):
    for split, df in demo_task.items():
        df.groupby("label").head(60 if split == "train" else 20).to_parquet(
            tmp_path / f"{split}.parquet"
        )
    write_json({"labels": sorted(demo_task["train"].label.unique())}, tmp_path / "labels.json")
    m = tfidf_baseline(tmp_path, seed=0, grid=(1.0, 10.0))
    assert m["test_macro_f1"] > 3 / 15, "well above chance on 15 balanced classes"
    assert m["C"] in (1.0, 10.0) and m["train_flops"] is None
    assert m == {
        **tfidf_baseline(tmp_path, seed=0, grid=(1.0, 10.0)),
        "train_seconds": m["train_seconds"],
    }
