"""`frpo-bench check`: a regression gate between two leaderboards (exit 1 on a regression).

Rows are matched on (base, defense, attack, attack_lr, metric). A metric regresses when it
moved in its wrong direction (known per row: `higher_is_better`) by more than its tolerance,
if one is given for it, and otherwise when the current mean falls outside the baseline's
95% interval on the wrong side. A baseline row with no current counterpart, or a pair whose
evaluator, judge, template, dataset or revision differ, is an error (exit 2), never a pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from frpo_bench.errors import ConfigError
from frpo_bench.results.schema import PROVENANCE, Row, read_csv, render_table, row_key

MUST_AGREE = ("higher_is_better", *PROVENANCE)


@dataclass
class Verdict:
    key: tuple
    baseline: float
    low: float
    high: float
    current: float
    allowed: str
    status: str  # ok | improved | REGRESSED

    @property
    def delta(self) -> float:
        return self.current - self.baseline


def parse_tolerances(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        metric, sep, value = item.partition("=")
        try:
            out[metric] = abs(float(value))
        except ValueError:
            sep = ""
        if sep and not math.isfinite(out[metric]):  # an infinite tolerance would pass any move: a vacuous gate
            sep = ""
        if not sep or not metric:
            raise ConfigError("--tolerance", item, "must look like METRIC=DELTA", "e.g. --tolerance harmful_refusal=0.05")
    return out


def usable_rows(rows: list[Row], field: str) -> dict[tuple, Row]:
    """Rows by key; nothing to compare, a row twice or a NaN mean is an error, never a pass."""
    if not rows:
        raise ConfigError(field, "0 rows", "has no rows: a gate over nothing would pass vacuously",
                          "give a leaderboard.csv with the rows to gate")
    by_key: dict[tuple, Row] = {}
    for row in rows:
        key = row_key(row)
        if key in by_key:
            raise ConfigError(field, "/".join(key), "holds this row more than once",
                              "keep one row per base/defense/attack/lr/metric")
        if any(math.isnan(row[c]) for c in ("mean", "ci95_low", "ci95_high")):
            raise ConfigError(field, "/".join(key), "has a nan mean or interval",
                              "rerun that cell; a metric without a number cannot be gated")
        by_key[key] = row
    return by_key


def compare(baseline: list[Row], current: list[Row], tolerances: dict[str, float],
            allow_new_metrics: bool = False) -> list[Verdict]:
    usable_rows(baseline, "--baseline")
    by_key = usable_rows(current, "--current")
    missing = [k for k in map(row_key, baseline) if k not in by_key]
    if missing:
        shown = "; ".join("/".join(k) for k in missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ConfigError("--current", f"{len(missing)} rows", f"lacks cells or metrics the baseline has: {shown}",
                          "run the same recipe for the current model, or regenerate the baseline")
    new = sorted({r["metric"] for r in current} - {r["metric"] for r in baseline})
    if new and not allow_new_metrics:
        raise ConfigError("--current", new, "has metrics the baseline does not, so they would go ungated",
                          "regenerate the baseline with them, or pass --allow-new-metrics to gate only the shared ones")
    unknown = sorted(set(tolerances) - {r["metric"] for r in baseline})
    if unknown:
        raise ConfigError("--tolerance", unknown, "names metrics the baseline does not have",
                          f"use one of {sorted({r['metric'] for r in baseline})}")
    verdicts = []
    for row in baseline:
        key = row_key(row)
        cur = by_key[key]
        for field in MUST_AGREE:
            if row[field] != cur[field]:
                raise ConfigError(f"{field} of {'/'.join(key)}", cur[field], f"differs from the baseline's {row[field]!r}",
                                  "compare numbers produced by the same judge, template and data only")
        verdicts.append(judge_row(row, cur, tolerances.get(row["metric"])))
    return verdicts


def judge_row(row: Row, cur: Row, tolerance: float | None) -> Verdict:
    higher = row["higher_is_better"]
    base, low, high, now = row["mean"], row["ci95_low"], row["ci95_high"], cur["mean"]
    worse_by = (base - now) if higher else (now - base)
    if tolerance is not None:
        allowed = f"tolerance {tolerance:g}"
        regressed = worse_by > tolerance + 1e-12
    else:
        allowed = f"ci95 [{low:.4f}, {high:.4f}]"
        regressed = now < low if higher else now > high
    status = "REGRESSED" if regressed else ("improved" if worse_by < 0 else "ok")
    return Verdict(row_key(row), base, low, high, now, allowed, status)


def diff_table(verdicts: list[Verdict]) -> str:
    header = ["base", "defense", "attack", "lr", "metric", "baseline", "current", "delta", "allowed", "status"]
    return render_table(header, [[*v.key[:3], v.key[3] or "-", v.key[4], f"{v.baseline:.4f}", f"{v.current:.4f}",
                                  f"{v.delta:+.4f}", v.allowed, v.status] for v in verdicts])


def check_files(baseline: Path, current: Path, tolerance_items: list[str],
                allow_new_metrics: bool = False) -> tuple[int, str]:
    for name, path in (("--baseline", baseline), ("--current", current)):
        if not Path(path).is_file():
            raise ConfigError(name, str(path), "is not a file", "give a leaderboard.csv written by frpo-bench")
    verdicts = compare(read_csv(baseline, "--baseline"), read_csv(current, "--current"),
                       parse_tolerances(tolerance_items), allow_new_metrics)
    regressed = [v for v in verdicts if v.status == "REGRESSED"]
    summary = (f"{len(regressed)} of {len(verdicts)} metrics regressed" if regressed
               else f"all {len(verdicts)} metrics within bounds")
    return (1 if regressed else 0), diff_table(verdicts) + "\n\n" + summary
