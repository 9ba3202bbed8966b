"""FRPO's robust objective and its per-sample advantages, as pure functions (arXiv 2602.08813).

For one prompt with G sampled completions, rewards r_i in [0, 1] and temperature lam > 0:
    w_i = exp(-r_i / lam),   J = -lam * log E[w]   (the worst case over a KL ball of radius ~ lam)
log E[w] is estimated by the plug-in log(S / G), S = sum_j w_j, or by its jackknife
correction. The advantages are the gradient of the group objective with respect to each
completion's log-probability, centred (they sum to zero) and scaled by max(lam, 1) / lam:
    plug-in:   A_i = max(lam, 1) * (1 - G * w_i / S)
    jackknife: A_i = max(lam, 1) * (1 - G * c_i),
               c_i = G w_i / S - ((G - 1) / G) * w_i * sum_{k != i} 1 / (S - w_k)
Everything is computed from log-weights a_i = -r_i / lam with log-sum-exp, so small lam
(0.05 with rewards in [0, 1]) neither overflows nor divides by a vanishing difference.
"""
from __future__ import annotations

import numpy as np


def _log_weights(rewards, lam: float) -> np.ndarray:
    if lam <= 0:
        raise ValueError(f"lambda must be positive, got {lam}")
    return -np.asarray(rewards, dtype=np.float64) / lam


def _logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(a - top), axis=axis))


def _leave_one_out_logsumexp(a: np.ndarray) -> np.ndarray:
    """L_k = log(S - w_k), computed as log-sum-exp over j != k (exact, no cancellation)."""
    g = a.shape[-1]
    masked = np.where(np.eye(g, dtype=bool), -np.inf, np.broadcast_to(a, (g, g)))
    return _logsumexp(masked, axis=1)


def plugin_advantages(rewards, lam: float) -> np.ndarray:
    a = _log_weights(rewards, lam)
    g = a.size
    share = np.exp(a - _logsumexp(a))  # w_i / S
    return max(lam, 1.0) * (1.0 - g * share)


def jackknife_advantages(rewards, lam: float) -> np.ndarray:
    a = _log_weights(rewards, lam)
    g = a.size
    if g < 2:
        return np.zeros(g)
    log_s = _logsumexp(a)
    loo = _leave_one_out_logsumexp(a)  # log(S - w_k)
    ratio = np.exp(a[:, None] - loo[None, :])  # w_i / (S - w_k)
    np.fill_diagonal(ratio, 0.0)
    c = g * np.exp(a - log_s) - (g - 1) / g * ratio.sum(axis=1)
    return max(lam, 1.0) * (1.0 - g * c)


def frpo_advantages(rewards, lam: float, jackknife: bool = True) -> np.ndarray:
    """Per-sample advantages of one group (see module docstring)."""
    return jackknife_advantages(rewards, lam) if jackknife else plugin_advantages(rewards, lam)


def log_mean_weight(rewards, lam: float, jackknife: bool = False) -> float:
    """Estimate of log E[exp(-r / lam)] from one group: plug-in or jackknife."""
    a = _log_weights(rewards, lam)
    g = a.size
    plug = float(_logsumexp(a) - np.log(g))
    if not jackknife or g < 2:
        return plug
    loo = _leave_one_out_logsumexp(a) - np.log(g - 1)
    return float(g * plug - (g - 1) * loo.mean())


def robust_objective(rewards, lam: float, jackknife: bool = False) -> float:
    """The group's estimate of J = -lam * log E[exp(-r / lam)] (logged per step beside mean reward)."""
    return -lam * log_mean_weight(rewards, lam, jackknife)

