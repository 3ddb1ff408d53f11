"""Training: loss sign and gradient flow, pretraining (Eq. 10), synthetic preference tasks with a
known optimum (held-out prompts), exact resume."""
from __future__ import annotations

import math

import pytest
import torch

from helpers import save_tiny_clip
from synthetic_scorers import colour_prompts
from pahi_rt import sampling
from pahi_rt.evaluation import evaluate
from pahi_rt.heads.head import HeadConfig, build_head
from pahi_rt.render import text_embeddings
from pahi_rt.training.scorer_objective import paired_scores
from pahi_rt.training.pretrain import PretrainConfig, kl_to_standard, pretrain
from pahi_rt.scorers.scorer_set import ScorerSet
from pahi_rt.training.train_with_scorers import TrainConfig, make_accelerator, train

SHAPE = (4, 8, 8)


def small_config(**kw) -> TrainConfig:
    base = dict(steps=40, batch_size=8, val_every=20, patience=0, pretrain_steps=40, hidden=32,
                height=64, width=64)
    return TrainConfig(**{**base, **kw})


def test_loss_sign_and_gradients_reach_only_the_head(tiny_components, tmp_path):
    comps = tiny_components
    scorers = ScorerSet.load([f"pickscore@{save_tiny_clip(tmp_path / 'clip')}",
                              "synthetic_scorers:fixed_colour"])
    head = build_head(HeadConfig("pahi", SHAPE, comps.spec.text_dim, hidden=16))
    with torch.no_grad():
        head.mu_mlp[-1].bias.normal_()
    prompts = ["a red cat", "a blue dog"]
    emb, eps = text_embeddings(comps, prompts), sampling.draw_eps([0, 1], SHAPE)
    schedule = sampling.Schedule.from_spec(comps.spec.scheduler, 1)
    pair = paired_scores(head, comps, scorers, prompts, eps, emb, schedule)
    loss = pair.loss()
    expected = torch.log1p(torch.exp(pair.s - pair.s_head)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    # descending the loss raises the head's score: d loss / d s' = -sigmoid(s - s') / B < 0
    s_head = pair.s_head.detach().requires_grad_(True)
    torch.nn.functional.softplus(pair.s - s_head).mean().backward()
    assert (s_head.grad < 0).all()
    assert not pair.s.requires_grad and pair.s_head.requires_grad
    loss.backward()
    assert head.mu_mlp[-1].weight.grad.abs().sum() > 0
    assert head.sigma_mlp[-1].bias.grad.abs().sum() > 0
    frozen = [comps.unet, comps.decoder, comps.text_encoder, *scorers.modules()]
    assert all(p.grad is None and not p.requires_grad for m in frozen for p in m.parameters())


def test_loss_prefers_the_winner():
    from pahi_rt.training.scorer_objective import PairScores

    s = torch.tensor([0.0, 0.0])
    assert PairScores(s, torch.tensor([1.0, 2.0])).loss() < math.log(2)
    assert PairScores(s, torch.tensor([-1.0, -2.0])).loss() > math.log(2)
    assert PairScores(s, torch.tensor([1.0, 0.0])).wins().tolist() == [1.0, 0.5]


def test_pretraining_kl_to_zero_and_prompts_stay_apart(tiny_components):
    comps = tiny_components
    torch.manual_seed(0)
    head = build_head(HeadConfig("pahi", SHAPE, comps.spec.text_dim, hidden=32))
    with torch.no_grad():  # a random start far from N(0, I), as the paper's
        for mlp in (head.mu_mlp, head.sigma_mlp):
            mlp[-1].weight.normal_(0, 0.3)
            mlp[-1].bias.normal_(0, 0.3)
    prompts, _ = colour_prompts()
    head.fit_feature_stats(text_embeddings(comps, prompts))
    emb = text_embeddings(comps, ["a red cat", "a blue cat", "a green tree"])
    kl_before = kl_to_standard(*head.distribution(emb)).item()
    summary = pretrain(head, comps, prompts, PretrainConfig(steps=100, batch_size=16, lr=1e-2))
    with torch.no_grad():
        mu, sigma = head.distribution(emb)
    kl_after = kl_to_standard(mu, sigma).item()
    assert kl_before > 0.1 and kl_after < 0.03, (kl_before, kl_after)
    assert summary["steps"] == 100
    spread = (mu[0] - mu[1]).abs().mean().item(), (mu[0] - mu[2]).abs().mean().item()
    assert min(spread) > 0.01, spread  # still prompt-dependent


@pytest.mark.parametrize("mode,factory,lr", [("pahi", "colour_by_word", 1e-2),
                                             ("hi", "fixed_colour", 1e-2)])
def test_beats_gaussian_on_held_out_prompts(tiny_components, tmp_path, mode, factory, lr):
    comps = tiny_components
    scorers = ScorerSet.load([f"synthetic_scorers:{factory}"])
    train_prompts, held_out = colour_prompts()
    config = small_config(mode=mode, lr=lr, steps=40 if mode == "pahi" else 25)
    run = train(comps, scorers, train_prompts, held_out[:8], config, tmp_path / "h",
                make_accelerator("cpu", None))
    assert run.step == config.steps and run.history[0]["step"] == 0
    assert mode == "pahi" or run.history[0]["val_win_rate"] == 0.5  # HI starts at N(0, I)
    from pahi_rt.heads.checkpoint import load_head

    head = load_head(tmp_path / "h", comps.spec, 64, 64, expect_mode=mode)
    result = evaluate(head, comps, scorers, held_out, seeds=2, batch_size=16, height=64,
                      width=64, two_step=False)
    rate = sum(result.win_rate[scorers.labels[0]]) / 2
    assert rate > 0.75, result.summary()


def test_resume_continues_exactly(tiny_components, tmp_path):
    comps = tiny_components
    scorers = ScorerSet.load(["synthetic_scorers:colour_by_word"])
    prompts, held_out = colour_prompts()
    acc = make_accelerator("cpu", None)
    full = small_config(steps=6, val_every=3, pretrain_steps=5, lr=1e-2, warmup=4)
    train(comps, scorers, prompts, held_out[:4], full, tmp_path / "a", acc)
    half = small_config(steps=3, val_every=3, pretrain_steps=5, lr=1e-2, warmup=4)
    train(comps, scorers, prompts, held_out[:4], half, tmp_path / "b", acc)
    run = train(comps, scorers, prompts, held_out[:4], full, tmp_path / "b", acc, resume=True)
    assert run.step == 6 and [h["step"] for h in run.history] == [0, 3, 6]
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "train_state" / "head.safetensors")
    b = load_file(tmp_path / "b" / "train_state" / "head.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    from pahi_rt.errors import InputError

    with pytest.raises(InputError, match="already holds a training run"):
        train(comps, scorers, prompts, held_out[:4], full, tmp_path / "a", acc)
    with pytest.raises(InputError, match="trained with --hidden"):
        train(comps, scorers, prompts, held_out[:4], small_config(hidden=8), tmp_path / "a", acc,
              resume=True)


def test_unet_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    from pahi_rt.components import load_components

    comps = load_components("tiny")  # own copy: checkpointing is switched on in place
    scorers = ScorerSet.load(["synthetic_scorers:fixed_colour"])
    head = build_head(HeadConfig("hi", SHAPE, comps.spec.text_dim))
    prompts = ["a red cat", "a blue dog"]
    emb, eps = text_embeddings(comps, prompts), sampling.draw_eps([0, 1], SHAPE)
    schedule = sampling.Schedule.from_spec(comps.spec.scheduler, 2)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            comps.unet.enable_gradient_checkpointing()
        head.zero_grad()
        paired_scores(head, comps, scorers, prompts, eps, emb, schedule).loss().backward()
        grads.append(head.mu.grad.clone())
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)
    assert all(p.grad is None for p in comps.unet.parameters())
