"""Model, stage-1 schedule, loss weights, FLOPs accounting, tokenizer and a tiny training run."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tlm.metrics import classification_metrics, paper_flops, step_flops
from tlm.model import TLMModel, count_parameters, make_config
from tlm.settings import StageConfig
from tlm.tokens import Batches, TokenStore
from tlm.training.checkpoints import Checkpoints
from tlm.training.ddp import Dist
from tlm.training.loop import StageData, train_stage
from tlm.training.plan import is_task_step, lr_lambda, plan_stage, task_loss_weights
from tlm.training.stage import run_stage
from tlm.training.tokenizer import train_tokenizer


def store(n: int, length: int = 20) -> TokenStore:
    return TokenStore(
        np.zeros(n * length, np.int32),
        np.arange(0, (n + 1) * length, length),
        np.zeros(n, np.int64),
    )


def test_default_budget_is_sized_by_task_and_external_data_with_a_floor():
    from tlm.config import PRESET_DEFAULTS

    cfg = StageConfig(batch_size=32, learning_rate=1e-3, epochs=15, rho1=None, min_steps=3000)
    small = plan_stage(cfg, store(300), store(12_000), None, 64)
    # S is 40 |T|: 3 external batches per task batch go once over S while 15 times over T; the floor
    # then lengthens both (3000 steps: 750 task batches, 80 passes over T; 7 over S)
    assert small.rho1 == 3 and small.max_steps == 3000 and small.eval_steps == 300
    large = plan_stage(cfg, store(5000), store(60_000), None, 64)
    assert large.rho1 == 1 and large.max_steps == 15 * 157 * 2 and large.eval_steps == 471
    twice = plan_stage(
        dataclasses.replace(cfg, external_epochs=2.0), store(5000), store(60_000), None, 64
    )
    assert twice.rho1 == 2 and twice.max_steps == 15 * 157 * 3
    # task only: every step a task batch, dev evaluated ten times whatever |T| (not once per pass)
    alone = plan_stage(cfg, store(300), None, None, 64)
    assert alone.rho1 == 0 and alone.max_steps == 3000 and alone.eval_steps == 300
    # an explicit step budget is kept as given
    fixed = plan_stage(
        dataclasses.replace(cfg, epochs=None, max_steps=50), store(300), store(12_000), None, 64
    )
    assert fixed.max_steps == 50 and fixed.eval_steps == 5
    assert (
        PRESET_DEFAULTS["tiny"]["stage1"]["min_steps"] > 0
        and PRESET_DEFAULTS["tiny"]["stage2"]["min_steps"] > 0
    )


@pytest.mark.parametrize(
    "rho1, steps, task", [(0, 10, 10), (1, 10, 5), (3, 40, 10), (999, 3000, 3)]
)
def test_stage1_schedule_counts(rho1, steps, task):
    kinds = [is_task_step(s, rho1, has_external=True) for s in range(steps)]
    assert sum(kinds) == task and len(kinds) - sum(kinds) == steps - task
    assert kinds[0], "each cycle of rho1 + 1 steps starts with its task batch"
    assert all(is_task_step(s, rho1, has_external=False) for s in range(steps)), (
        "no external data: task only"
    )


def test_task_loss_weights():
    assert task_loss_weights(20) == pytest.approx((20 / 21, 1 / 21))
    assert task_loss_weights(0) == (0.0, 1.0)  # stage 2: task loss only


def test_lr_warmup_then_linear_decay():
    f = lr_lambda(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == 0.0


def tiny_model(vocab=50, labels=3, layers=2, hidden=16, heads=2, inter=32):
    cfg = make_config("tiny", vocab, [f"label{i}" for i in range(labels)], 32, 0, dropout=0.0)
    cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size = (
        layers,
        hidden,
        heads,
        inter,
    )
    cfg.embedding_size = hidden
    return TLMModel(cfg)


def test_step_flops_matches_a_hand_count_and_torch_flop_counter():
    model = tiny_model()
    cfg = model.config
    # by hand, 2 layers, H=16, I=32, V=50, 3 labels; batch 4 x seq 10 = 40 tokens, 6 masked:
    dense = 2 * (4 * 16 * 16 + 2 * 16 * 32)  # 4096 multiply-adds per token
    attention = 2 * 2 * 10 * 16  # QK^T and AV: 640 per token
    mlm = 16 * 16 + 16 * 50  # transform + vocabulary projection per masked token
    head = 16 * 16 + 16 * 3
    hand = 3 * 2 * (40 * (dense + attention) + 6 * mlm + 4 * head)
    assert step_flops(cfg, [10] * 4, 6, task_head=True) == hand

    ids = torch.randint(5, 50, (4, 10))
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels.view(-1)[torch.arange(6) * 5] = 7
    model.config._attn_implementation = "eager"  # plain matmuls, which the counter sees
    with FlopCounterMode(display=False) as counter:
        out = model(ids, torch.ones_like(ids), mlm_labels=mlm_labels)
        (out.mlm_logits.sum() + out.logits.sum()).backward()
    assert counter.get_total_flops() == hand


def test_parameter_count_and_paper_flops():
    model = tiny_model()
    n = count_parameters(model)
    assert n["total"] == sum(p.numel() for p in model.parameters())  # tied decoder counted once
    assert n["non_embedding"] < n["total"]
    assert paper_flops(100, 1000) == 600_000


def test_metrics_by_hand():
    m = classification_metrics([0, 0, 1, 2], [0, 1, 1, 1], 3)
    # label 0: P=1 R=.5 F1=2/3; label 1: P=1/3 R=1 F1=.5; label 2: F1=0
    assert m["accuracy"] == 0.5 and m["micro_f1"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory, demo_task):
    """Tokenizer and token stores for 20 examples per label of the demo task."""
    tmp = tmp_path_factory.mktemp("task")
    train = demo_task["train"].groupby("label").head(20)
    labels = sorted(train.label.unique())
    tok = train_tokenizer(train.text, 600, 2, tmp / "tok")
    y = train.label.map({label: i for i, label in enumerate(labels)}).to_numpy()
    return (
        tok,
        TokenStore.from_texts(tok, train.text, 64, y),
        TokenStore.from_texts(tok, train.text, 64),
    )


def test_tokenizer_and_token_store(tiny_task, tmp_path):
    tok, store, _ = tiny_task
    assert tok.mask_token_id is not None
    assert store.row(0)[0] == tok.cls_token_id and store.row(0)[-1] == tok.sep_token_id
    assert store.lengths.max() <= 64 and len(store.labels) == len(store)


def run(tiny_task, tmp_path, steps=12, ckpt=None, d=Dist(), dropout=0.1, device=None, **cfg):
    tok, store, ext = tiny_task
    torch.manual_seed(0)
    model = TLMModel(
        make_config(
            "tiny",
            len(tok),
            [str(i) for i in range(int(store.labels.max()) + 1)],
            64,
            tok.pad_token_id,
            dropout,
        )
    )
    cfg = StageConfig(
        **{
            "max_steps": steps,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "rho1": 2,
            "rho2": 5,
            "eval_steps": 6,
            **cfg,
        }
    )
    pad = tok.pad_token_id
    data = StageData(
        tok,
        Batches(store, 8, pad, seed=0, bucket=2),
        Batches(ext, 8, pad, seed=1),
        Batches(store, 32, pad, seed=0, shuffle=False),
    )
    res = train_stage(
        model,
        cfg,
        data,
        tmp_path / f"log{d.rank}.csv",
        keep_best=False,
        checkpoints=ckpt,
        d=d,
        device=device,
    )
    return model, res


def test_tiny_training_run_follows_the_schedule(tiny_task, tmp_path):
    model, res = run(tiny_task, tmp_path)
    assert (res.steps, res.task_steps, res.external_steps) == (12, 4, 8)
    assert (
        res.best_step == 12 and 0 <= res.dev["macro_f1"] <= 1 and res.flops > 0 and res.tokens > 0
    )
    log = (tmp_path / "log0.csv").read_text().splitlines()
    assert len(log) == 13 and log[1].split(",")[1] == "task" and log[2].split(",")[1] == "external"
    model.save_pretrained(tmp_path / "ckpt")
    again = TLMModel.from_pretrained(tmp_path / "ckpt")
    assert (
        again.generator_lm_head.weight.data_ptr()
        == again.electra.embeddings.word_embeddings.weight.data_ptr()
    )
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a.cpu(), b)


def test_resumed_run_ends_like_an_uninterrupted_one(tiny_task, tmp_path, monkeypatch):
    straight, res = run(tiny_task, tmp_path / "a")
    ckpt = Checkpoints(tmp_path / "ckpts", "same-settings", keep=2)
    calls = {"n": 0}
    original = Batches.next

    def crash_at_step_9(self):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt("killed")
        return original(self)

    monkeypatch.setattr(Batches, "next", crash_at_step_9)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_task, tmp_path / "b", ckpt=ckpt, save_steps=4)
    monkeypatch.setattr(Batches, "next", original)
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == [
        "step-000000004",
        "step-000000008",
    ]
    resumed, res2 = run(tiny_task, tmp_path / "b", ckpt=ckpt, save_steps=4)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert (res2.steps, res2.tokens, res2.flops, res2.dev) == (
        res.steps,
        res.tokens,
        res.flops,
        res.dev,
    )
    assert (tmp_path / "a/log0.csv").read_text().count("\n") == (
        tmp_path / "b/log0.csv"
    ).read_text().count("\n")
    assert Checkpoints(tmp_path / "ckpts", "other-settings", keep=2).newest() is None


def test_gradient_accumulation_keeps_the_step(tiny_task, tmp_path):
    # fp32 also on a GPU: in bf16, splitting a batch changes the rounding by more than the tolerance
    one, r1 = run(tiny_task, tmp_path / "a", steps=4, dropout=0.0, precision="fp32")
    acc, r2 = run(
        tiny_task,
        tmp_path / "b",
        steps=4,
        dropout=0.0,
        precision="fp32",
        gradient_accumulation_steps=3,
    )
    for a, b in zip(one.state_dict().values(), acc.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert r1.tokens == r2.tokens


def _ddp_worker(rank, tiny_task, tmp_path, port, out):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    model, res = run(
        tiny_task, tmp_path, steps=4, dropout=0.0, d=Dist(rank, 2), device=torch.device("cpu")
    )
    torch.save(
        {"state": model.state_dict(), "tokens": res.tokens, "flops": res.flops},
        out / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_ddp_on_cpu_with_two_processes_matches_one_process(tiny_task, tmp_path):
    from tlm.training.ddp import _free_port

    port = _free_port()
    torch.multiprocessing.spawn(
        _ddp_worker, args=(tiny_task, tmp_path / "ddp", port, tmp_path), nprocs=2
    )
    single, res = run(tiny_task, tmp_path / "one", steps=4, dropout=0.0, device=torch.device("cpu"))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key, value in single.state_dict().items():
        assert torch.equal(r0["state"][key], r1["state"][key]), "ranks stay in sync"
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-4, atol=1e-5)
    assert r0["tokens"] == res.tokens and r0["flops"] == res.flops
    assert (tmp_path / "ddp" / "log0.csv").exists() and not (tmp_path / "ddp" / "log1.csv").exists()


def test_seeds_give_different_but_reproducible_runs(tiny_task, tmp_path):
    tok, store, ext = tiny_task
    tok.save_pretrained(tmp_path / "tok")
    dev = TokenStore(store.ids, store.offsets, store.labels)
    for name, s in (("train", store), ("dev", dev), ("external", ext)):
        s.save(tmp_path / "tokens" / name)
    settings = {
        "model": {"preset": "tiny", "max_seq_length": 64},
        "trainer": {},
        "stage1": {
            "max_steps": 6,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "rho1": 1,
            "rho2": 5,
            "save_steps": 0,
        },
    }

    def weights(seed, name):
        out = tmp_path / name / "stage1"
        run_stage(
            "stage1",
            {**settings, "seed": seed},
            tmp_path / "tok",
            tmp_path / "tokens",
            tmp_path / "tokens" / "external",
            None,
            [str(i) for i in range(15)],
            out,
            tmp_path / name / "log.csv",
        )
        return TLMModel.from_pretrained(out).state_dict()

    a, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_tokenizer_ids_are_canonical(tmp_path, demo_task):
    """Specials first, then sorted: the same vocabulary always gets the same ids (the trainer alone
    numbers tokens of equal rank in hash order, which changes from process to process)."""
    vocab = train_tokenizer(demo_task["train"].text.head(800), 1500, 2, tmp_path / "a").get_vocab()
    by_id = sorted(vocab, key=vocab.get)
    assert by_id[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert by_id[5:] == sorted(by_id[5:]) and len(by_id) == 1500


def test_a_bad_local_tokenizer_gets_a_clear_error(tmp_path):
    from tlm.io import TLMInputError
    from tlm.training.tokenizer import load_tokenizer

    with pytest.raises(TLMInputError, match="not a readable tokenizer directory.*Fix:"):
        load_tokenizer(tmp_path / "nowhere")
    (
        tmp_path / "empty"
    ).mkdir()  # not "install sentencepiece", which transformers says of an empty folder
    with pytest.raises(
        TLMInputError, match=r"empty: no tokenizer files in it .* found \[\]\). Fix:"
    ):
        load_tokenizer(tmp_path / "empty")


TRAIN_TOKENIZER = """
import json, sys
import pandas as pd
from tlm.training.tokenizer import train_tokenizer
texts = pd.read_parquet(sys.argv[1]).text.head(800)
print(json.dumps(train_tokenizer(texts, 3000, 2, sys.argv[2]).get_vocab(), sort_keys=True))
"""


def test_the_vocabulary_is_the_same_in_every_process(tmp_path):
    """tokenizers' own trainer breaks ties in hash order (on the demo: three trainings, three vocabularies);
    tlm.wordpiece breaks them by the pieces' strings."""
    import os
    import subprocess

    from conftest import DEMO, python

    runs = [
        subprocess.run(
            [
                python(),
                "-c",
                TRAIN_TOKENIZER,
                str(DEMO / "task/train.parquet"),
                str(tmp_path / str(seed)),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2)
    ]
    assert runs[0] == runs[1]
    vocab = json.loads(runs[0])
    assert len(vocab) == 3000 and {"##s", "the", "package"} <= set(vocab)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_a_gpu_asked_for_but_absent_is_said_or_stops_the_job(caplog):
    from tlm.io import TLMInputError
    from tlm.training.ddp import check_gpu

    assert check_gpu(0, required=False) == "cpu"
    assert check_gpu(1, required=False) == "cpu (1 GPU requested, none found)"
    assert (
        "1 GPU(s) requested (resources.gpu) but CUDA finds none: training on the CPU" in caplog.text
    )
    with pytest.raises(TLMInputError, match="stopping \\(trainer.require_gpu: true\\).*Fix:"):
        check_gpu(1, required=True)


def test_a_diverging_run_stops_with_the_fix(tiny_task, tmp_path):
    from tlm.io import TLMInputError

    with pytest.raises(
        TLMInputError, match="training diverged. Fix: lower the stage's learning_rate"
    ):
        run(tiny_task, tmp_path, steps=6, learning_rate=1e12)


def test_batches_prepared_ahead_train_the_same_and_resume_the_same(
    tiny_task, tmp_path, monkeypatch
):
    plain, res = run(tiny_task, tmp_path / "a", steps=10, dropout=0.0)
    ahead, res2 = run(tiny_task, tmp_path / "b", steps=10, dropout=0.0, prefetch=3)
    for a, b in zip(plain.state_dict().values(), ahead.state_dict().values()):
        assert torch.equal(a, b)
    assert (res.tokens, res.flops, res.dev) == (res2.tokens, res2.flops, res2.dev)
    # killed at step 7 with batches drawn ahead, resumed from the checkpoint of step 4
    ckpt = Checkpoints(tmp_path / "ckpts", "same", keep=2)
    calls = {"n": 0}
    original = Batches.next

    def crash(self):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt("killed")
        return original(self)

    monkeypatch.setattr(Batches, "next", crash)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_task, tmp_path / "c", steps=10, dropout=0.0, prefetch=3, ckpt=ckpt, save_steps=4)
    monkeypatch.setattr(Batches, "next", original)
    resumed, _ = run(
        tiny_task, tmp_path / "c", steps=10, dropout=0.0, prefetch=3, ckpt=ckpt, save_steps=4
    )
    for a, b in zip(plain.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_a_flops_budget_below_one_step_trains_one_and_says_so(caplog):
    import numpy as np

    store = TokenStore(np.ones(40 * 10, np.int32), np.arange(0, 401, 10), np.zeros(40, np.int64))
    config = make_config("tiny", 100, ["a", "b"], 32, 0)
    cfg = StageConfig(flops=1, batch_size=8, learning_rate=1e-3, rho1=1, rho2=5)
    assert (
        plan_stage(cfg, store, store, config, 32).max_steps == 2
    )  # one task batch and its external one
    assert (
        "flops = 1 is less than one step's" in caplog.text
        and "Fix: raise the stage's flops" in caplog.text
    )
    plan_stage(
        StageConfig(max_steps=3, batch_size=64, learning_rate=1e-3, rho1=0), store, None, config, 32
    )
    assert "batch_size 64 is more than the 40 training examples" in caplog.text


@pytest.mark.parametrize("with_mlm_head", [False, True])
def test_stage1_from_a_checkpoint_keeps_its_encoder_and_mlm_head_and_saves_both_heads(
    tmp_path, with_mlm_head
):
    """A bare encoder (as sentence-transformers ships one) gets a new MLM head; a checkpoint with one
    keeps it. Either way the two heads share one encoder (the decoder tied to its embeddings), and
    the saved stage-1 directory loads with plain transformers as both heads' classes."""
    from conftest import tiny_pretrained_encoder
    from transformers import (
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        BertForMaskedLM,
    )

    from tlm.model import PretrainedTLM

    ckpt = tiny_pretrained_encoder(tmp_path / "encoder")
    if with_mlm_head:
        torch.manual_seed(1)
        BertForMaskedLM.from_pretrained(ckpt).save_pretrained(
            ckpt
        )  # the encoder with a (random) head of its own
    original = AutoModelForMaskedLM.from_pretrained(ckpt).state_dict()
    model = PretrainedTLM(ckpt, ["x", "y", "z"])
    assert model.new_mlm_head is not with_mlm_head
    state = model.mlm.state_dict()
    assert torch.equal(
        state["bert.encoder.layer.0.output.dense.weight"],
        original["bert.encoder.layer.0.output.dense.weight"],
    )
    same_head = torch.equal(
        state["cls.predictions.transform.dense.weight"],
        original["cls.predictions.transform.dense.weight"],
    )
    assert same_head is with_mlm_head
    assert (
        model.mlm.cls.predictions.decoder.weight
        is model.classifier.bert.embeddings.word_embeddings.weight
    )

    ids = torch.tensor([[2, 5, 9, 10, 7, 3], [2, 8, 6, 3, 0, 0]])
    attention = (ids != 0).long()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 1] = 9, 8
    model.eval()
    with torch.no_grad():
        out = model(ids, attention, labels)
    assert out.logits.shape == (2, 3) and out.mlm_logits.shape == (2, model.config.vocab_size)
    model.save_pretrained(tmp_path / "stage1")
    mlm = AutoModelForMaskedLM.from_pretrained(tmp_path / "stage1").eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "stage1").eval()
    assert classifier.config.id2label == {0: "x", 1: "y", 2: "z"}
    with torch.no_grad():
        torch.testing.assert_close(
            classifier(input_ids=ids, attention_mask=attention).logits, out.logits
        )
        torch.testing.assert_close(
            mlm(input_ids=ids, attention_mask=attention).logits[labels != -100], out.mlm_logits
        )
    assert PretrainedTLM(tmp_path / "stage1", ["x", "y", "z"]).new_mlm_head is False


def test_a_checkpoint_whose_mlm_head_is_unknown_is_named_with_the_fix(tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    from tlm.io import TLMInputError
    from tlm.model import PretrainedTLM

    DistilBertModel(
        DistilBertConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    ).save_pretrained(tmp_path)
    with pytest.raises(
        TLMInputError,
        match=r"a 'distilbert' checkpoint, whose MLM head .* Fix: use a checkpoint of \['bert'",
    ):
        PretrainedTLM(tmp_path, ["x", "y"])
