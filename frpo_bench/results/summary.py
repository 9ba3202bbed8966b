"""Robust summaries per defense: the worst case over attacks and learning rates, and the worst
case among attacks that keep capability above a retention bound (an attacker who destroys
the model's usefulness has not really won)."""
from __future__ import annotations

from frpo_bench.results.schema import SCHEMA_VERSION, Row, diverged
from frpo_bench.results.schema import to_csv as rows_to_csv

COLUMNS = ["schema_version", "recipe", "model", "base", "defense", "metric", "higher_is_better", "unattacked_mean",
           "worst_mean", "worst_ci95_low", "worst_ci95_high", "worst_attack", "worst_lr", "retention_metric",
           "retention", "retention_bound", "retained_worst_mean", "retained_worst_attack", "retained_worst_lr", "n_attack_cells"]


def _worst(rows: list[Row]) -> Row | None:
    """The row with the worst mean in its metric's direction (ties: the first in leaderboard order)."""
    if not rows:
        return None
    pick = min if rows[0]["higher_is_better"] else max
    return pick(rows, key=lambda r: r["mean"])


def shares(retention) -> list[float]:
    """A retention setting as its list of shares (one share, as older manifests record it, is a list of one)."""
    return sorted(retention if isinstance(retention, (list, tuple)) else [retention], reverse=True)


def worst_cases(rows: list[Row], capability_metric: str | None, retention) -> list[dict]:
    """Per (base, defense, metric): the worst attacked row, and for each retention share the worst among attacks
    that keep capability at or above that share of the unattacked value (one summary row per share; one row
    with no share where no bound applies)."""
    cells: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        cells.setdefault((r["base"], r["defense"]), {}).setdefault(r["metric"], {})[(r["attack"], r["attack_lr"])] = r
    out = []
    for (base, defense), metrics in cells.items():
        capability = metrics.get(capability_metric, {}) if capability_metric else {}
        reference = capability.get(("none", ""))
        for metric, by_attack in metrics.items():
            attacked = [r for (attack, _), r in by_attack.items() if attack != "none" and not diverged(r)]
            if not attacked:
                continue
            worst = _worst(attacked)
            unattacked = by_attack.get(("none", ""))
            bounded = reference is not None and metric != capability_metric
            for share in shares(retention) if bounded else [None]:
                bound = reference["mean"] * share if share is not None else None
                retained = None
                if bound is not None:
                    kept = [r for r in attacked if (r["attack"], r["attack_lr"]) in capability
                            and capability[(r["attack"], r["attack_lr"])]["mean"] >= bound]
                    retained = _worst(kept)
                out.append({
                    "schema_version": SCHEMA_VERSION, "recipe": worst["recipe"], "model": worst["model"],
                    "base": base, "defense": defense, "metric": metric, "higher_is_better": worst["higher_is_better"],
                    "unattacked_mean": unattacked["mean"] if unattacked else float("nan"),
                    "worst_mean": worst["mean"], "worst_ci95_low": worst["ci95_low"],
                    "worst_ci95_high": worst["ci95_high"], "worst_attack": worst["attack"],
                    "worst_lr": worst["attack_lr"], "retention_metric": capability_metric or "",
                    "retention": "" if share is None else share,
                    "retention_bound": bound if bound is not None else float("nan"),
                    "retained_worst_mean": retained["mean"] if retained else float("nan"),
                    "retained_worst_attack": retained["attack"] if retained else "",
                    "retained_worst_lr": retained["attack_lr"] if retained else "", "n_attack_cells": len(attacked)})
    return out


def to_csv(rows: list[dict]) -> str:
    return rows_to_csv(rows, COLUMNS)
