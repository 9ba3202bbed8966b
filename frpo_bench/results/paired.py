"""Paired comparison of defenses: for every pair of defenses on the same base, every attack cell and
every metric, the difference of their means with a paired bootstrap interval.

Both defenses are scored on the same prompts, and their seeds are matched by value (by order where
the two defenses ran different seeds), so the comparison is paired: each bootstrap draw resamples
the matched seeds, then, within each drawn seed, the prompts, with the same indices for both
defenses, and takes the mean over drawn seeds of (mean of A - mean of B). Noise that the two share
(a hard prompt, a lucky seed) cancels, which two separate intervals cannot show. A pair whose
per-sample lists differ in length (a judge left some answers unparsed) cannot be matched prompt by
prompt: its difference and interval are nan.
"""
from __future__ import annotations

import itertools

from frpo_bench.results.bootstrap import percentile_interval, two_level_means
from frpo_bench.results.schema import SCHEMA_VERSION, to_csv

SEARCHED = "searched"  # the attack_lr of a searched attack's pairs
COLUMNS = ["schema_version", "recipe", "base", "attack", "attack_lr", "metric", "higher_is_better", "defense_a",
           "defense_b", "mean_a", "mean_b", "diff", "ci95_low", "ci95_high", "n_seeds", "n_prompts"]


def paired_bootstrap(a: list[list[float]], b: list[list[float]], seed: int = 0,
                     samples: int = 2000) -> tuple[float, float, float]:
    """(difference of means, 2.5th and 97.5th percentiles of its paired bootstrap). a[s][i] and b[s][i]:
    the scores of defenses A and B at matched seed s on prompt i."""
    import numpy as np
    pairs = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in zip(a, b)]
    if not pairs or any(x.size != y.size or x.size == 0 for x, y in pairs):
        return float("nan"), float("nan"), float("nan")
    per_seed = [x - y for x, y in pairs]  # prompt-level differences: paired within each seed
    observed = float(np.mean([d.mean() for d in per_seed]))
    return (observed, *percentile_interval(two_level_means(per_seed, np.random.default_rng(seed), samples)))


def match_seeds(a: dict, b: dict) -> list[tuple]:
    """Seeds present for both defenses, by value; by order when they share none."""
    common = sorted(set(a) & set(b), key=str)
    if common:
        return [(a[s], b[s]) for s in common]
    return list(zip((a[s] for s in sorted(a, key=str)), (b[s] for s in sorted(b, key=str))))


def paired_differences(records: list[dict]) -> list[dict]:
    """One row per (base, attack cell, metric, pair of defenses) from per-seed result records."""
    cells: dict[tuple, dict[str, dict]] = {}
    meta: dict[tuple, dict] = {}
    for r in records:
        # a searched attack's rows pair across learning rates: each defense's own best setting
        key = (r["base"], r["attack"], SEARCHED if r["attack"].startswith("search:") else r["attack_lr"], r["metric"])
        cells.setdefault(key, {}).setdefault(r["defense"], {})[r["seed"]] = r["per_sample"]
        meta.setdefault(key, r)
    rows = []
    for key, by_defense in cells.items():
        base, attack, lr, metric = key
        for defense_a, defense_b in itertools.combinations(by_defense, 2):
            matched = match_seeds(by_defense[defense_a], by_defense[defense_b])
            diff, low, high = paired_bootstrap([x for x, _ in matched], [y for _, y in matched])
            mean = lambda groups: sum(sum(g) / len(g) for g in groups) / len(groups)  # noqa: E731
            rows.append({"schema_version": SCHEMA_VERSION, "recipe": meta[key]["recipe"], "base": base,
                         "attack": attack, "attack_lr": lr, "metric": metric,
                         "higher_is_better": meta[key]["higher_is_better"], "defense_a": defense_a,
                         "defense_b": defense_b, "mean_a": mean([x for x, _ in matched]),
                         "mean_b": mean([y for _, y in matched]), "diff": diff, "ci95_low": low, "ci95_high": high,
                         "n_seeds": len(matched), "n_prompts": len(matched[0][0]) if matched else 0})
    return rows


def paired_csv(rows: list[dict]) -> str:
    return to_csv(rows, COLUMNS)
