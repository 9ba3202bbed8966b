"""FRPO advantages: equal to the autograd gradient of the group objective, centred, shift-invariant,
with the right large-lambda limits, finite at small lambda, and with the estimators' exact biases for
Bernoulli(0.5) rewards at lambda 1 (computed here by summing over the binomial outcomes: plug-in bias
-Var(w)/(2 G E[w]^2) = O(1/G), jackknife O(1/G^2))."""
import math

import numpy as np
import pytest
import torch

from frpo_bench.defenses.frpo_math import (
    frpo_advantages,
    jackknife_advantages,
    log_mean_weight,
    plugin_advantages,
    robust_objective,
)

LAMBDAS = [0.1, 0.5, 1.0, 2.0, 5.0]
GROUPS = [2, 4, 8, 16]


def autograd_advantages(rewards, lam, jackknife):
    """d/d logp_i of the centred group objective -lam*logmeanexp_hat + (lam/G) sum logp_i, times G*max(lam,1)/lam."""
    r = torch.tensor(rewards, dtype=torch.float64)
    g = r.numel()
    logp = torch.zeros(g, dtype=torch.float64, requires_grad=True)
    w = torch.exp(-r / lam) * torch.exp(logp - logp.detach())  # score-function weights: value w, gradient w
    s = w.sum()
    if jackknife:
        loo = s - w  # S - w_k
        estimate = g * torch.log(s / g) - (g - 1) * torch.log(loo / (g - 1)).mean()
    else:
        estimate = torch.log(s / g)
    objective = -lam * estimate + lam / g * logp.sum()
    (grad,) = torch.autograd.grad(objective, logp)
    return (grad * g * max(lam, 1.0) / lam).numpy()


@pytest.mark.parametrize("jackknife", [False, True])
@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("g", GROUPS)
def test_advantages_equal_autograd_gradient(jackknife, lam, g):
    rewards = np.random.default_rng(g * 100 + int(lam * 10)).uniform(0, 1, size=g)
    expected = autograd_advantages(rewards, lam, jackknife)
    assert np.allclose(frpo_advantages(rewards, lam, jackknife), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("fn", [plugin_advantages, jackknife_advantages])
@pytest.mark.parametrize("lam", LAMBDAS + [0.05])
def test_centred_and_shift_invariant(fn, lam):
    rewards = np.random.default_rng(1).uniform(0, 1, size=8)
    adv = fn(rewards, lam)
    assert abs(adv.sum()) < 1e-9
    assert np.allclose(fn(rewards + 0.3, lam), adv, atol=1e-9)


def test_large_lambda_limits():
    rewards = np.random.default_rng(2).uniform(0, 1, size=8)
    centred = rewards - rewards.mean()
    assert np.allclose(plugin_advantages(rewards, 1e6), centred, atol=1e-5)
    assert np.allclose(jackknife_advantages(rewards, 1e6), 8 / 7 * centred, atol=1e-5)


def exact_bias(g, p, lam, jackknife):
    """E[estimate] - log E[w] for Bernoulli(p) rewards, summing over k ~ Binomial(g, p) rewards equal to 1."""
    truth = math.log(p * math.exp(-1 / lam) + (1 - p))
    expectation = 0.0
    for k in range(g + 1):
        rewards = [1.0] * k + [0.0] * (g - k)
        expectation += math.comb(g, k) * p ** k * (1 - p) ** (g - k) * log_mean_weight(rewards, lam, jackknife)
    return expectation - truth


@pytest.mark.parametrize("g,plugin,jackknife", [(4, -2.9e-2, 2.2e-3), (8, -1.39e-2, 5.9e-4), (16, -6.8e-3, 1.4e-4)])
def test_bernoulli_bias_table(g, plugin, jackknife):
    assert exact_bias(g, 0.5, 1.0, False) == pytest.approx(plugin, rel=0.05)
    assert exact_bias(g, 0.5, 1.0, True) == pytest.approx(jackknife, rel=0.05)


def test_small_lambda_jackknife_overshoot_is_reported_as_in_design():
    assert exact_bias(4, 0.5, 0.1, True) == pytest.approx(0.92, abs=0.01)
    assert exact_bias(4, 0.5, 0.1, False) == pytest.approx(-0.61, abs=0.01)


@pytest.mark.parametrize("jackknife", [False, True])
def test_finite_at_small_lambda(jackknife):
    for rewards in ([0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0] * 8, np.linspace(0, 1, 16)):
        adv = frpo_advantages(rewards, 0.05, jackknife)
        assert np.all(np.isfinite(adv)) and abs(adv.sum()) < 1e-8
        assert math.isfinite(robust_objective(rewards, 0.05, jackknife))


