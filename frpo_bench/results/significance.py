"""One-sided tests of "the current model is worse than the baseline by more than a tolerance", for the gate.

Values are oriented so that positive means a move in the metric's wrong direction. Each test gives its
one-sided p-value: paired tests need the same prompts on both sides, unpaired ones compare two samples,
the aggregate test (which also gives the move's interval) uses only means and intervals (a leaderboard.csv).
An unpaired move's interval is `unpaired_interval`; a paired one's, the leaderboard's paired bootstrap.
"""
from __future__ import annotations

import math

import numpy as np

RESAMPLES = 10_000  # sign flips or permutations; seeded, so a verdict is reproducible
SEED = 0


def is_binary(*samples) -> bool:
    return all(np.isin(np.asarray(s, dtype=float), (0.0, 1.0)).all() for s in samples)


def mcnemar(baseline, current, higher_is_better: bool) -> float:
    """Exact one-sided McNemar test on paired 0/1 outcomes: of the prompts whose outcome changed, are more of
    them worse than chance (Binomial(discordant, 1/2)) would give?"""
    b, c = np.asarray(baseline, dtype=float), np.asarray(current, dtype=float)
    got_worse = int(np.sum(b > c)) if higher_is_better else int(np.sum(c > b))
    discordant = int(np.sum(b != c))
    return binomial_tail(got_worse, discordant)


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2); 1 when n is 0 (nothing changed, nothing to see)."""
    if n == 0 or k <= 0:
        return 1.0
    return float(sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n)


def paired_sign_flip(worse, tolerance: float) -> float:
    """One-sided sign-flip test of mean(worse) > tolerance on paired differences (symmetric under the null)."""
    d = np.asarray(worse, dtype=float) - tolerance
    if d.size == 0 or not np.any(d):
        return 1.0
    observed = d.mean()
    signs = np.random.default_rng(SEED).choice((-1.0, 1.0), size=(RESAMPLES, d.size))
    return float((1 + np.sum((signs * np.abs(d)).mean(axis=1) >= observed - 1e-12)) / (RESAMPLES + 1))


def two_sample_permutation(baseline_worse, current_worse, tolerance: float) -> float:
    """One-sided permutation test of mean(current) - mean(baseline) > tolerance (values already oriented)."""
    a = np.asarray(baseline_worse, dtype=float)
    b = np.asarray(current_worse, dtype=float) - tolerance
    pooled = np.concatenate([a, b])
    observed = b.mean() - a.mean()
    shuffled = np.random.default_rng(SEED).permuted(np.tile(pooled, (RESAMPLES, 1)), axis=1)
    moves = shuffled[:, a.size:].mean(axis=1) - shuffled[:, : a.size].mean(axis=1)
    return float((1 + np.sum(moves >= observed - 1e-12)) / (RESAMPLES + 1))


def unpaired_interval(baseline_worse, current_worse) -> tuple[float, float]:
    a, b = np.asarray(baseline_worse, dtype=float), np.asarray(current_worse, dtype=float)
    rng = np.random.default_rng(SEED)
    diffs = (b[rng.integers(0, b.size, size=(RESAMPLES, b.size))].mean(axis=1)
             - a[rng.integers(0, a.size, size=(RESAMPLES, a.size))].mean(axis=1))
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def standard_error(mean: float, low: float, high: float, n: int) -> float:
    """A mean's standard error from its 95% interval; for a rate whose interval collapsed (all 32 prompts
    refused: [1, 1]), no less than a binomial one with half a count of each outcome added (Agresti-Coull-like),
    since 32 of 32 does not mean the next 32 cannot differ."""
    se = (high - low) / (2 * 1.96)
    if 0.0 <= low <= high <= 1.0 and n > 0:
        p = (mean * n + 0.5) / (n + 1)
        se = max(se, math.sqrt(p * (1 - p) / n))
    return se


def aggregate_z(worse_by: float, tolerance: float, se_baseline: float, se_current: float) -> tuple[float, tuple]:
    """Normal test of the move from two independent means and their standard errors."""
    se = math.hypot(se_baseline, se_current)
    if se == 0:
        return (0.0 if worse_by > tolerance else 1.0), (worse_by, worse_by)
    z = (worse_by - tolerance) / se
    return 0.5 * math.erfc(z / math.sqrt(2)), (worse_by - 1.96 * se, worse_by + 1.96 * se)


def holm(p_values: list[float], alpha: float) -> list[bool]:
    """Holm's step-down rejections: the k-th smallest p (from 0) is rejected at alpha / (m - k) while every smaller
    one was, so the chance of any false rejection among the m tests is at most alpha."""
    m, rejected = len(p_values), [False] * len(p_values)
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        if p_values[index] >= alpha / (m - rank):
            break
        rejected[index] = True
    return rejected
