"""Training from feedback records (library level): synthetic tasks in noise space with a known
answer, exact resume, --init as the reference, x_T of head-made images."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from helpers import random_head
from pahi_rt import sampling
from pahi_rt.errors import InputError
from pahi_rt.heads.checkpoint import head_key, load_head, save_head
from pahi_rt.training.train_from_feedback import FeedbackConfig, FeedbackData, train_from_feedback
from pahi_rt.render import text_embeddings
from pahi_rt.feedback.records import Record, Source
from pahi_rt.training.train_with_scorers import TrainConfig, make_accelerator

SHAPE = (4, 8, 8)
PROMPTS = [f"a {c} {o}" for c in ("red", "blue") for o in ("cat", "dog", "tree", "car", "cup",
                                                           "hat", "kite", "boat")]


@pytest.fixture(scope="module")
def text_components():
    from pahi_rt.components import load_text_components

    return load_text_components("tiny")


def channel0(seed: int) -> float:
    return sampling.draw_eps([seed], SHAPE)[0, 0].mean().item()


def liked(prompt: str, seed: int) -> bool:
    """Red prompts like a high channel-0 mean of x_T, blue ones a low one."""
    return (channel0(seed) > 0) == ("red" in prompt)


def label_records(n: int, prompt_dependent: bool) -> list[Record]:
    out = []
    for k in range(n):
        prompt = PROMPTS[k % len(PROMPTS)] if prompt_dependent else "a red cat"
        out.append(Record(prompt, (k,), liked(prompt, k)))
    return out


def pair_records(n: int) -> list[Record]:
    out = []
    for k in range(n):
        a, b = 2 * k, 2 * k + 1
        win = a if channel0(a) > channel0(b) else b
        out.append(Record(PROMPTS[k % len(PROMPTS)][:5] + " cat", (win, a + b - win), None))
    return out


def config(**kw) -> TrainConfig:
    base = dict(steps=60, batch_size=64, val_every=20, patience=0, pretrain_steps=0, hidden=32,
                height=64, width=64, lr=1e-2, warmup=0)
    return TrainConfig(**{**base, **kw})


def train(components, records, out, cfg, fb=FeedbackConfig(), resume=False):
    return train_from_feedback(components, records, cfg, fb, out,
                               make_accelerator("cpu", False), resume=resume)


@pytest.mark.parametrize("objective", ["kto", "dpo"])
def test_hi_learns_the_liked_direction(text_components, tmp_path, objective):
    records = label_records(1200, False) if objective == "kto" else pair_records(600)
    run = train(text_components, records, tmp_path / "h", config(mode="hi", lr=1e-3,
                                                                 objective=objective))
    first, best = run.history[0], min(run.history, key=lambda h: h["val_loss"])
    assert first["val_accuracy"] == 0.5  # the start is the reference: every reward is 0
    # DPO: log 2 per pair; KTO: lambda_y / 2 per record, lambda ~1 for near-balanced classes
    assert first["val_loss"] == pytest.approx(math.log(2), abs=1e-6) if objective == "dpo" \
        else first["val_loss"] == pytest.approx(0.5, abs=0.03)
    # x_T is 256 numbers of which users judge 64 (their mean): accuracy stays well below 1
    assert best["val_loss"] < first["val_loss"] and best["val_accuracy"] > 0.6, run.history
    head = load_head(tmp_path / "h", text_components.spec, 64, 64, expect_mode="hi")
    mu, _ = head.distribution(torch.zeros(1, 1, 1))
    assert mu[0, 0].mean() > 0.02 and mu[0, 0].mean() > 5 * mu[0, 1:].mean().abs()


def test_pahi_learns_a_prompt_dependent_answer(text_components, tmp_path):
    records = label_records(1200, True)
    run = train(text_components, records, tmp_path / "p", config(mode="pahi", objective="kto",
                                                                 lr=1e-3, steps=80))
    assert max(h["val_accuracy"] for h in run.history) > 0.65, run.history
    head = load_head(tmp_path / "p", text_components.spec, 64, 64, expect_mode="pahi")
    unseen = ["a red lamp", "a blue lamp"]  # an object no record had
    mu, _ = head.distribution(text_embeddings(text_components, unseen))
    assert mu[0, 0].mean() > mu[1, 0].mean() + 0.02, mu[:, 0].mean((1, 2))


def test_resume_continues_exactly(text_components, tmp_path):
    records = label_records(200, True)
    full = config(mode="pahi", objective="kto", steps=6, val_every=3, batch_size=16, warmup=4)
    half = config(mode="pahi", objective="kto", steps=3, val_every=3, batch_size=16, warmup=4)
    train(text_components, records, tmp_path / "a", full)
    train(text_components, records, tmp_path / "b", half)
    run = train(text_components, records, tmp_path / "b", full, resume=True)
    assert run.step == 6 and [h["step"] for h in run.history] == [0, 3, 6]
    for name in ("head.safetensors", "reference.safetensors"):
        a = load_file(tmp_path / "a" / "train_state" / name)
        b = load_file(tmp_path / "b" / "train_state" / name)
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(InputError, match="trained with --beta 10.0, not 3.0"):
        train(text_components, records, tmp_path / "b", full, FeedbackConfig(beta=3.0),
              resume=True)
    with pytest.raises(InputError, match="feedback-records-sha256"):
        train(text_components, records[:-1], tmp_path / "b", full, resume=True)


def test_init_head_is_start_and_reference(text_components, tmp_path):
    init = random_head("hi", SHAPE, seed=3)
    save_head(init, tmp_path / "init")
    fb = FeedbackConfig(init=str(tmp_path / "init"))
    run = train(text_components, pair_records(100), tmp_path / "o",
                config(mode="hi", objective="dpo", steps=10, val_every=10), fb)
    assert run.history[0]["val_loss"] == pytest.approx(math.log(2))  # policy == reference
    ref = load_file(tmp_path / "o" / "train_state" / "reference.safetensors")
    assert all(torch.equal(ref[k], v) for k, v in init.state_dict().items())
    last = load_file(tmp_path / "o" / "train_state" / "head.safetensors")  # the last step
    assert not torch.equal(last["mu"], init.mu)
    import json

    meta = json.loads((tmp_path / "o" / "config.json").read_text())["training"]
    assert meta["reference"] == str(tmp_path / "init") and meta["objective"] == "dpo"
    with pytest.raises(InputError, match="not 'pahi'"):
        train(text_components, pair_records(100), tmp_path / "o2",
              config(mode="pahi", objective="dpo", steps=1), fb)


def test_x_t_of_head_made_images(text_components, tmp_path):
    made_by = random_head("pahi", SHAPE, seed=5)
    save_head(made_by, tmp_path / "gen")
    src = Source(noise="pahi", head=str(tmp_path / "gen"), head_key=head_key(tmp_path / "gen"))
    records = [Record("a red cat", (7,), True, src), Record("a red cat", (8,), False)]
    data = FeedbackData(records, text_components, SHAPE, needs_text=False)
    emb = data.embeddings(records)
    x = data.initial_noise(records, 0, emb)
    eps = sampling.draw_eps([7, 8], SHAPE)
    assert torch.allclose(x[0], made_by(eps[:1], emb[:1])[0], atol=1e-6)
    assert torch.equal(x[1], eps[1])  # a Gaussian image: x_T = eps
    with torch.no_grad():
        made_by.mu_mlp[-1].bias.add_(1.0)
    save_head(made_by, tmp_path / "gen")  # retrained in place: the records no longer fit
    with pytest.raises(InputError, match="changed since the feedback was recorded"):
        FeedbackData(records, text_components, SHAPE, needs_text=False)


def test_update_grid_keeps_the_update_coarse(text_components, tmp_path):
    """FeedbackConfig.update_grid (smooth.py, a measured variant): every change to mu and
    log-sigma is constant over grid x grid blocks; a grid that does not divide the latent is
    refused."""
    from pahi_rt.training.smooth import block_mean

    records = label_records(256, True)
    for mode in ("hi", "pahi"):
        train(text_components, records, tmp_path / mode, config(mode=mode, objective="kto",
                                                                 steps=5, val_every=5),
              FeedbackConfig(update_grid=2))
        head = load_head(tmp_path / mode, text_components.spec, 64, 64)
        mu, sigma = head.distribution(text_embeddings(text_components, PROMPTS[:3]))
        assert not torch.allclose(mu, torch.zeros_like(mu))
        for t in (mu, sigma.log()):
            assert torch.allclose(t, block_mean(t, 2), atol=1e-6)
    with pytest.raises(InputError, match="update_grid must be 0"):
        train(text_components, records, tmp_path / "x", config(objective="kto"),
              FeedbackConfig(update_grid=3))
