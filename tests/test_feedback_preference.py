"""KTO / DPO on the head's density: log densities, known values, gradient signs, the scale."""
from __future__ import annotations

import math

import pytest
import torch

from pahi_rt.training import density_objectives as pref
from pahi_rt.heads.head import HeadConfig, build_head

SHAPE = (4, 8, 8)


def test_log_density_and_kl_match_torch():
    g = torch.Generator().manual_seed(0)
    x, mu = torch.randn(3, *SHAPE, generator=g), torch.randn(3, *SHAPE, generator=g)
    sigma = torch.rand(3, *SHAPE, generator=g) + 0.5
    normal = torch.distributions.Normal(mu, sigma)
    const = 0.5 * math.log(2 * math.pi) * math.prod(SHAPE)
    assert torch.allclose(pref.log_density(x, mu, sigma) - const,
                          normal.log_prob(x).flatten(1).sum(1), atol=1e-3)
    mu_r, sigma_r = torch.zeros_like(mu), torch.ones_like(sigma) * 1.3
    expected = torch.distributions.kl_divergence(normal, torch.distributions.Normal(mu_r, sigma_r))
    assert torch.allclose(pref.kl_divergence(mu, sigma, mu_r, sigma_r),
                          expected.flatten(1).sum(1), atol=1e-3)
    assert torch.allclose(pref.kl_divergence(mu, sigma, mu, sigma), torch.zeros(3), atol=1e-5)


def test_known_values():
    r = torch.tensor([0.3, -0.2])
    assert torch.allclose(pref.dpo_loss(r, r, beta=5.0), torch.full((2,), math.log(2)))
    assert pref.dpo_loss(torch.tensor([1.0]), torch.tensor([0.0]), 2.0).item() == \
        pytest.approx(math.log1p(math.exp(-2.0)))
    good = torch.tensor([True, False])
    # at the reference point the value is sigmoid(0) = 1/2 for both classes: loss lambda / 2
    loss = pref.kto_loss(torch.zeros(2), good, torch.tensor(0.0), 10.0, (2.0, 0.5))
    assert loss.tolist() == pytest.approx([1.0, 0.25])
    # z < 0 is clamped to 0: the same loss as z = 0
    a = pref.kto_loss(r, good, torch.tensor(-3.0), 1.0, (1.0, 1.0))
    assert torch.allclose(a, pref.kto_loss(r, good, torch.tensor(0.0), 1.0, (1.0, 1.0)))
    assert pref.kto_loss(torch.tensor([1.0]), torch.tensor([True]), torch.tensor(0.0), 1.0,
                         (1.0, 1.0)).item() == pytest.approx(1 - 1 / (1 + math.exp(-1)))


def test_class_weights_balance_the_classes():
    assert pref.class_weights(50, 50) == (1.0, 1.0)
    w_good, w_bad = pref.class_weights(25, 75)
    assert w_good * 25 == pytest.approx(w_bad * 75) and w_good == 2.0
    assert pref.class_weights(25, 75, w_good=1.0) == (1.0, 100 / 150)


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_a_liked_x_becomes_more_likely(objective):
    """One gradient step: the liked image's log density rises relative to the disliked one's
    (DPO), the liked one rises and the disliked one falls (KTO)."""
    head = build_head(HeadConfig("hi", SHAPE, 32))
    ref = build_head(HeadConfig("hi", SHAPE, 32)).requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x_good, x_bad = torch.randn(1, *SHAPE, generator=g), torch.randn(1, *SHAPE, generator=g)
    emb, scale = torch.zeros(1, 1, 1), pref.density_scale(SHAPE)

    def logp():
        with torch.no_grad():
            dist = head.distribution(emb)
            return pref.log_density(x_good, *dist).item(), pref.log_density(x_bad, *dist).item()

    before = logp()
    dist, ref_dist = head.distribution(emb), ref.distribution(emb)
    r_good = pref.implicit_reward(x_good, dist, ref_dist, scale)
    r_bad = pref.implicit_reward(x_bad, dist, ref_dist, scale)
    if objective == "dpo":
        loss = pref.dpo_loss(r_good, r_bad, 10.0).mean()
    else:
        z = scale * pref.kl_divergence(*dist, *ref_dist).mean()
        loss = pref.kto_loss(torch.cat([r_good, r_bad]), torch.tensor([True, False]), z, 10.0,
                             (1.0, 1.0)).mean()
    loss.backward()
    with torch.no_grad():
        for p in head.parameters():
            p -= 0.01 * p.grad
    after = logp()
    assert after[0] - after[1] > before[0] - before[1]
    if objective == "kto":
        assert after[0] > before[0] and after[1] < before[1]


def test_scale_makes_beta_size_independent():
    """A dense mean shift (every element by a) changes the implicit-reward difference of two
    random images by the same amount at 64x64 and 512x512: beta means the same at both."""
    spreads = []
    for shape in ((4, 8, 8), (4, 64, 64)):
        g = torch.Generator().manual_seed(0)
        xw, xl = torch.randn(400, *shape, generator=g), torch.randn(400, *shape, generator=g)
        dist = (torch.full(shape, 0.1).expand(400, *shape), torch.ones(400, *shape))
        ref = (torch.zeros(400, *shape), torch.ones(400, *shape))
        s = pref.density_scale(shape)
        diff = pref.implicit_reward(xw, dist, ref, s) - pref.implicit_reward(xl, dist, ref, s)
        spreads.append(diff.std().item())
    assert spreads[0] == pytest.approx(0.1 * math.sqrt(2), rel=0.15)
    assert spreads[1] == pytest.approx(spreads[0], rel=0.15)


def test_accuracies():
    assert pref.pair_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])) == \
        pytest.approx(0.5)
    r = torch.tensor([2.0, 1.0, 0.0, 5.0, -1.0])
    good = torch.tensor([True, False, True, False, True])
    # within prompts: a: (2 > 1) right, (0 > 1) wrong; b: (-1 > 5) wrong -> 1 of 3
    assert pref.ranking_accuracy(r, good, ["a", "a", "a", "b", "b"]) == pytest.approx(1 / 3)
    # no prompt has both kinds: all good/bad pairs instead
    assert pref.ranking_accuracy(r[:2], good[:2], ["a", "b"]) == 1.0
    assert math.isnan(pref.ranking_accuracy(r[:1], good[:1], ["a"]))
