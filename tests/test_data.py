"""Task loading and validation, batching, and BERT's MLM masking proportions."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tlm.data import load_task, read_column_chunks
from tlm.io import TLMInputError
from tlm.tokens import Batches, TokenStore, mask_tokens


def write_task(tmp_path, train, dev=None, test=None, fmt="parquet"):
    paths = {}
    for split, df in (
        ("train", train),
        ("dev", dev if dev is not None else train),
        ("test", test if test is not None else train),
    ):
        path = tmp_path / f"{split}.{fmt}"
        df.to_parquet(path) if fmt == "parquet" else df.to_csv(path, index=False)
        paths[split] = str(path)
    return paths


GOOD = pd.DataFrame({"text": ["a b", "c d", "e f"], "label": ["x", "y", "x"]})


def test_load_task_normalises_and_returns_labels(tmp_path):
    splits, labels, _ = load_task(write_task(tmp_path, GOOD, fmt="csv"))
    assert labels == ["x", "y"]
    assert list(splits["test"].columns) == ["text", "label"]


def test_custom_column_names(tmp_path):
    df = GOOD.rename(columns={"text": "sentence", "label": "category"})
    splits, _, _ = load_task(
        write_task(tmp_path, df), text_column="sentence", label_column="category"
    )
    assert splits["train"]["text"].tolist() == ["a b", "c d", "e f"]


@pytest.mark.parametrize(
    "train, test, message",
    [
        (GOOD.drop(columns="label"), None, r"missing column\(s\) \['label'\]"),
        (GOOD.iloc[:0], None, "no rows with text and label"),
        (
            GOOD,
            pd.DataFrame({"text": ["q"], "label": ["zzz"]}),
            r"labels not seen in train: \['zzz'\]",
        ),
        (GOOD.assign(label="x"), None, "only 1 distinct label"),
    ],
)
def test_bad_task_data_errors_name_file_and_fix(tmp_path, train, test, message):
    with pytest.raises(TLMInputError, match=message) as err:
        load_task(write_task(tmp_path, train, test=test))
    assert str(tmp_path) in str(err.value) and "Fix:" in str(err.value)


def test_integer_labels_stored_as_floats_match_train(tmp_path):
    """A split with a missing label stores integer labels as floats (1.0): they are train's 1."""
    train = pd.DataFrame({"text": ["a b", "c d", "e f"], "label": [1, 2, 1]})
    dev = pd.DataFrame({"text": ["g h", "i j", "k l"], "label": [1.0, None, 2.0]})
    splits, labels, report = load_task(write_task(tmp_path, train, dev=dev))
    assert labels == ["1", "2"] and splits["dev"]["label"].tolist() == ["1", "2"]
    assert report["dev"]["empty_label_dropped"] == 1


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_json_lines_labels_of_mixed_types_are_one_label_each(tmp_path):
    """JSON lines may write a label as 1, 1.0 or "1" (a column of mixed types): one label."""
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [{"text": f"t{i}", "label": v} for i, v in enumerate([1, 1.0, "1", 2, 2.0, "neg"])],
    )
    _, labels, _ = load_task({"train": train, "dev": train, "test": train})
    assert labels == ["1", "2", "neg"]


def test_a_list_in_a_cell_is_refused_with_the_row(tmp_path):
    """Several labels per row (multi-label data) is not one label: refused, naming file and row."""
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": ["x", "y"]}]
    )
    with pytest.raises(TLMInputError, match=r"column 'label' holds a list in row 2") as err:
        load_task({"train": train, "dev": train, "test": train})
    assert "train.jsonl" in str(err.value) and "Fix:" in str(err.value)


def test_a_latin1_csv_is_named_with_the_fix(tmp_path):
    paths = write_task(tmp_path, GOOD, fmt="csv")
    (tmp_path / "train.csv").write_bytes(
        "text,label\ncaf\u00e9 ol\u00e9,x\nb c,y\n".encode("latin-1")
    )
    with pytest.raises(
        TLMInputError, match=r"train.csv: not UTF-8 text \(line 2: byte e9\). Fix: save it as UTF-8"
    ):
        load_task(paths)
    with pytest.raises(TLMInputError, match="train.csv: not UTF-8 text"):
        list(read_column_chunks(tmp_path / "train.csv", "text"))


def test_a_bad_json_line_of_a_task_file_is_named(tmp_path):
    paths = write_task(tmp_path, GOOD)
    (tmp_path / "train.jsonl").write_text(
        GOOD.to_json(orient="records", lines=True) + '{"text": "x", oops\n'
    )
    with pytest.raises(TLMInputError, match=r"train.jsonl, line 4: not JSON"):
        load_task(paths | {"train": str(tmp_path / "train.jsonl")})


def test_missing_file(tmp_path):
    with pytest.raises(TLMInputError, match="file not found"):
        load_task({"train": str(tmp_path / "nope.parquet"), "dev": "", "test": ""})


def store(rows, labels=None):
    return TokenStore(
        np.concatenate(rows).astype(np.int32), np.cumsum([0] + [len(r) for r in rows]), labels
    )


def test_token_store_roundtrip(tmp_path):
    s = store([[1, 5, 2], [1, 6, 7, 8, 2], [1, 2]], np.array([0, 1, 0]))
    s.save(tmp_path / "tok")
    again = TokenStore.load(tmp_path / "tok")
    assert (
        len(again) == 3
        and again.row(1).tolist() == [1, 6, 7, 8, 2]
        and again.labels.tolist() == [0, 1, 0]
    )
    assert again.lengths.tolist() == [3, 5, 2]


def test_batches_pad_dynamically_and_cover_every_example():
    rows = [[1, 5, 2], [1, 6, 7, 8, 2], [1, 2]]
    b = Batches(store(rows, np.array([0, 1, 0])), batch_size=2, pad_id=0, seed=0)
    batches = list(b.epoch())
    assert sum(len(x["input_ids"]) for x in batches) == 3
    for x in batches:
        assert x["input_ids"].shape[1] == max(int(m.sum()) for m in x["attention_mask"])
    ordered = list(Batches(store(rows), 3, 0, 0, shuffle=False).epoch())[0]
    assert ordered["input_ids"].tolist() == [[1, 5, 2, 0, 0], [1, 6, 7, 8, 2], [1, 2, 0, 0, 0]]
    cut = list(Batches(store(rows), 3, 0, 0, shuffle=False, max_len=3, sep_id=2).epoch())[0]
    assert cut["input_ids"].tolist() == [[1, 5, 2], [1, 6, 2], [1, 2, 0]], (
        "cut rows keep [SEP] last"
    )


def test_length_bucketing_reduces_padding_and_keeps_every_example():
    rng = np.random.default_rng(0)
    rows = [[1] * int(n) for n in rng.integers(2, 60, 400)]

    def padding(bucket):
        b = Batches(store(rows), 16, 0, seed=0, bucket=bucket)
        seen, pad = [], 0
        for _ in range(25):
            x = b.next()
            pad += int((x["attention_mask"] == 0).sum())
            seen.append(len(x["input_ids"]))
        return pad, sum(seen)

    (pad_plain, n1), (pad_bucket, n2) = padding(0), padding(10)
    assert n1 == n2 == 400 and pad_bucket < pad_plain / 5


def test_labelled_batches_are_bucketed_within_each_label():
    """Length goes with the label here (label 0: 2-40 tokens, label 1: 20-60): a plain length sort
    would make batches of mostly one label; bucketing within each label keeps both labels in
    every batch and still cuts the padding."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    lengths = np.where(labels == 0, rng.integers(2, 41, 400), rng.integers(20, 61, 400))
    s = store([[1] * int(n) for n in lengths], labels)

    def epoch(bucket):
        b = Batches(s, 16, 0, seed=0, bucket=bucket)
        batches = [b.next() for _ in range(25)]
        pad = sum(int((x["attention_mask"] == 0).sum()) for x in batches)
        return pad, [x["labels"].float().mean().item() for x in batches], batches

    pad_plain, _, _ = epoch(0)
    pad_bucket, shares, batches = epoch(10)
    assert sum(len(x["labels"]) for x in batches) == 400
    assert pad_bucket < pad_plain * 0.6
    assert all(0.3 <= share <= 0.7 for share in shares), shares


def test_evaluation_batches_sorted_by_length_map_back_to_store_order():
    rng = np.random.default_rng(1)
    rows = [[1] * int(n) for n in rng.integers(2, 60, 100)]
    b = Batches(store(rows), 8, 0, seed=0, shuffle=False, bucket=4)
    widths = [int(x["attention_mask"].sum(1).max()) for x in b.epoch()]
    seen = np.concatenate([x["attention_mask"].sum(1).numpy() for x in b.epoch()])
    assert sum(widths) < 8 * 13 * 59 / 2, "sorted spans: little padding"
    assert b.in_store_order(seen).tolist() == [len(r) for r in rows]


def test_batch_stream_resumes_exactly_from_its_state():
    rows = [[1, i, 2] for i in range(3, 40)]
    a = Batches(store(rows), 4, 0, seed=3, bucket=2)
    for _ in range(7):
        a.next()
    b = Batches(store(rows), 4, 0, seed=3, bucket=2)
    b.load_state_dict(a.state_dict())
    for _ in range(20):  # across an epoch boundary
        assert torch.equal(a.next()["input_ids"], b.next()["input_ids"])


def test_mask_tokens_proportions():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (400, 250), generator=gen)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    masked, labels = mask_tokens(ids, special, mask_token_id=3, vocab_size=1000, generator=gen)
    picked = labels != -100
    assert not picked[:, 0].any(), "special tokens are never picked"
    assert abs(picked.float().mean().item() / (249 / 250) - 0.15) < 0.005
    assert torch.equal(labels[picked], ids[picked])
    n = picked.sum().item()
    to_mask = (masked == 3) & picked
    unchanged = (masked == ids) & picked
    changed = picked & ~to_mask & ~unchanged
    assert abs(to_mask.sum().item() / n - 0.8) < 0.01
    # a random replacement can draw the original token (p = 1/vocab): "unchanged" is ~10% + that
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01
    assert abs(changed.sum().item() / n - 0.1) < 0.01
    assert torch.equal(masked[~picked], ids[~picked])


def test_task_hygiene_counts_drops_repeats_long_texts_and_leakage(tmp_path):
    from tlm.data import hygiene_notes

    long = " ".join(["word"] * 600)
    train = pd.DataFrame(
        {
            "text": ["a b", "a b", "c d", "  ", None, long, "e f", "NA"],
            "label": ["x", "x", "y", "x", "y", "y", None, "x"],
        }
    )
    test = pd.DataFrame({"text": ["a b", "g h", "i j"], "label": ["x", "y", "x"]})
    _, _, report = load_task(write_task(tmp_path, train, dev=test.iloc[1:], test=test))
    assert report["train"] | {} == {
        "rows": 8,
        "empty_text_dropped": 2,
        "empty_label_dropped": 1,
        "kept": 5,
        "missing_markers": 1,
        "repeated_texts": 1,
        "words_median": 2.0,
        "words_p90": report["train"]["words_p90"],
        "words_max": 600,
        "very_long": 1,
    }
    assert report["leakage"] == {"dev_in_train": 0, "test_in_train": 1, "test_in_dev": 2}
    notes = hygiene_notes("t", report)
    assert notes[0].startswith(
        "t: LEAKAGE: 1 test and 0 dev texts also in train, 2 test texts also in dev"
    )
    assert any(
        "train: 8 rows, 2 dropped for an empty text, 1 dropped for an empty label, 1 repeated texts, 1 texts or "
        "labels that read NA, NaN, null or None, kept as those words (Fix: leave a missing value's cell empty, "
        "or drop the row), 1 texts of more than 512 words" in n
        for n in notes
    )


def test_packed_rows_hold_several_examples_up_to_max_len():
    rows = [[1, *range(10, 10 + n), 2] for n in (3, 5, 1, 8, 2, 20)]  # [CLS]=1 body [SEP]=2
    b = Batches(store(rows), 2, pad_id=0, seed=0, shuffle=False, max_len=12, sep_id=2, pack=True)
    batch = next(b.epoch())
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert first == [1, 10, 11, 12, 2, 10, 11, 12, 13, 14, 2] and batch["input_ids"].shape[1] == 12
    seen = [
        x
        for batch in b.epoch()
        for row, m in zip(batch["input_ids"], batch["attention_mask"])
        for x in row[m.bool()].tolist()
    ]
    assert seen.count(1) == 4 and seen.count(2) >= 5, (
        "4 rows; each example keeps its [SEP] (the long one cut)"
    )
    assert all(len(r) <= 12 for batch in b.epoch() for r in batch["input_ids"])
    assert "labels" not in batch


def test_rows_are_padded_to_a_multiple_for_few_shapes():
    b = Batches(
        store([[1, 5, 2], [1, 6, 7, 8, 9, 2]]), 2, pad_id=0, seed=0, shuffle=False, pad_multiple=8
    )
    assert next(b.epoch())["input_ids"].shape == (2, 8)


@pytest.mark.parametrize(
    "name, content",
    [
        ("new.csv", 'text,id\na,1\n\n   ,2\nb,3\n"",4\nc,5\n'),
        ("new.tsv", "text\na\n\n   \nb\n\nc\n"),
        ("new.jsonl", '{"text": "a"}\n\n   \n{"text": "b"}\n{"text": null}\n{"text": "c"}\n'),
    ],
)
def test_texts_to_predict_keep_every_row_in_place(tmp_path, name, content):
    """Blank and whitespace-only rows are rows: dropping them would shift the rows after them."""
    (tmp_path / name).write_text(content)
    rows = [t for chunk in read_column_chunks(tmp_path / name, "text", rows=2) for t in chunk]
    assert rows == ["a", "", "" if name.endswith("jsonl") else "   ", "b", "", "c"]


def test_texts_to_predict_name_a_bad_json_line(tmp_path):
    (tmp_path / "new.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(TLMInputError, match=r"new.jsonl, line 2: not JSON"):
        list(read_column_chunks(tmp_path / "new.jsonl", "text"))
    (tmp_path / "new.jsonl").write_text('{"sentence": "a"}\n')
    with pytest.raises(
        TLMInputError, match=r"missing column\(s\) \['text'\] \(found \['sentence'\]\)"
    ):
        list(read_column_chunks(tmp_path / "new.jsonl", "text"))
