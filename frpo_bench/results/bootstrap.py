"""The two-level bootstrap every interval of a leaderboard uses, vectorised: resample the seeds, then
within each drawn seed its prompts. A seed drawn twice in one replicate gets two independent prompt
resamples, as in the plain double loop (one numpy call per (slot, seed) instead of one per seed and
replicate: the leaderboard's 136 intervals took 7.7 s of a demo's results with the loop)."""
from __future__ import annotations

SAMPLES = 2000


def two_level_means(groups, rng, samples: int = SAMPLES):
    """`samples` bootstrap replicates of the mean over seeds of each seed's mean; groups: one 1-d array
    of per-prompt values per seed (none empty)."""
    import numpy as np
    k = len(groups)
    picked = rng.integers(0, k, size=(samples, k))
    slot_means = np.empty((samples, k))
    for slot in range(k):
        for i, values in enumerate(groups):
            rows = np.flatnonzero(picked[:, slot] == i)
            if rows.size:
                slot_means[rows, slot] = values[rng.integers(0, values.size, size=(rows.size, values.size))].mean(axis=1)
    return slot_means.mean(axis=1)


def percentile_interval(draws) -> tuple[float, float]:
    import numpy as np
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))
