"""Model, stage-1 schedule, loss weights, FLOPs accounting, tokenizer and a tiny training run."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tlm.data import Batches
from tlm.metrics import classification_metrics, paper_flops, step_flops
from tlm.model import TLMModel, count_parameters, make_config
from tlm.train import StageConfig, encode, is_task_step, lr_lambda, task_loss_weights, train_stage, train_tokenizer


@pytest.mark.parametrize("rho1, steps, task", [(0, 10, 10), (1, 10, 5), (3, 40, 10), (999, 3000, 3)])
def test_stage1_schedule_counts(rho1, steps, task):
    kinds = [is_task_step(s, rho1, has_external=True) for s in range(steps)]
    assert sum(kinds) == task and len(kinds) - sum(kinds) == steps - task
    assert kinds[0], "each cycle of rho1 + 1 steps starts with its task batch"
    assert all(is_task_step(s, rho1, has_external=False) for s in range(steps)), "no external data: task only"


def test_task_loss_weights():
    assert task_loss_weights(20) == pytest.approx((20 / 21, 1 / 21))
    assert task_loss_weights(0) == (0.0, 1.0)  # stage 2: task loss only


def test_lr_warmup_then_linear_decay():
    f = lr_lambda(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == 0.0


def tiny_model(vocab=50, labels=3, layers=2, hidden=16, heads=2, inter=32):
    cfg = make_config("tiny", vocab, labels, 32, 0, dropout=0.0)
    cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size = layers, hidden, heads, inter
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
    assert step_flops(cfg, 4, 10, 6, task_head=True) == hand

    ids = torch.randint(5, 50, (4, 10))
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels.view(-1)[torch.arange(6) * 5] = 7
    model.config._attn_implementation = "eager"  # plain matmuls, which the counter sees
    with FlopCounterMode(display=False) as counter:
        mlm_loss, task_loss, _ = model(ids, torch.ones_like(ids), mlm_labels=mlm_labels, labels=torch.tensor([0, 1, 2, 0]))
        (mlm_loss + task_loss).backward()
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


def test_tokenizer_and_tiny_training_run(tmp_path, demo_task):
    train = demo_task["train"].groupby("label").head(20)
    labels = sorted(train.label.unique())
    tok = train_tokenizer(train.text, 600, 2, tmp_path / "tok")
    assert tok.mask_token_id is not None and (tmp_path / "tok" / "tokenizer.json").exists()
    ids = encode(tok, train.text, 64)
    assert ids[0][0] == tok.cls_token_id and all(len(i) <= 64 for i in ids)
    y = train.label.map({l: i for i, l in enumerate(labels)}).to_numpy()

    torch.manual_seed(0)
    model = TLMModel(make_config("tiny", len(tok), len(labels), 64, tok.pad_token_id))
    cfg = StageConfig(max_steps=12, batch_size=8, learning_rate=1e-3, rho1=2, rho2=5, eval_steps=6)
    res = train_stage(
        model, cfg, tok, Batches(ids, y, 8, tok.pad_token_id, 0), Batches(ids, None, 8, tok.pad_token_id, 1),
        Batches(ids, None, 32, tok.pad_token_id, 0, shuffle=False), y, tmp_path / "log.csv", keep_best=False,
    )
    assert (res.steps, res.task_steps, res.external_steps) == (12, 4, 8)
    assert res.best_step == 12 and 0 <= res.dev["macro_f1"] <= 1 and res.flops > 0 and res.tokens > 0
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert len(log) == 13 and log[1].split(",")[1] == "task" and log[2].split(",")[1] == "external"
    model.save_pretrained(tmp_path / "ckpt")
    again = TLMModel.from_pretrained(tmp_path / "ckpt")
    assert again.cls.predictions.decoder.weight.data_ptr() == again.bert.embeddings.word_embeddings.weight.data_ptr()
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a.cpu(), b)
