"""`frpo-bench check`: a regression gate between two leaderboards (exit 1 on a regression).

Rows are matched on (base, defense, attack, attack_lr, metric). A metric regresses when it moved in
its wrong direction (known per row: `higher_is_better`) by more than its tolerance (default 0: any
move) and a one-sided test at level `alpha` (default 0.05) says the move is not sampling noise, so a
rerun of the same checkpoint fails the gate at most `alpha` of the time per metric. The test uses the
per-prompt scores when both leaderboards have their run's results.jsonl beside them: paired by prompt
when both scored as many prompts under as many seeds (exact McNemar for 0/1 outcomes, a sign-flip
test otherwise), a permutation test if not; from the CSV alone, a normal test on the two means and
their intervals. A baseline row with no current counterpart, or a pair whose evaluator, judge,
template, dataset or revision differ, is an error (exit 2), never a pass.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from frpo_bench.errors import ConfigError
from frpo_bench.results import significance as sig
from frpo_bench.results.paired import match_seeds, paired_bootstrap
from frpo_bench.results.schema import BOUNDED_UNITS, PROVENANCE, Row, read_csv, render_table, row_key

MUST_AGREE = ("higher_is_better", *PROVENANCE)


@dataclass
class Verdict:
    key: tuple
    baseline: float
    current: float
    worse_by: float  # the move in the metric's wrong direction (negative: it improved)
    interval: tuple[float, float]  # 95% interval of worse_by
    p: float  # one-sided p-value of "worse by more than the tolerance"
    test: str
    tolerance: float
    status: str  # ok | improved | REGRESSED


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
    """Rows by key; nothing to compare, a row twice, or a number no run could have written is an error, never a
    pass."""
    if not rows:
        raise ConfigError(field, "0 rows", "has no rows: a gate over nothing would pass vacuously",
                          "give a leaderboard.csv with the rows to gate")
    by_key: dict[tuple, Row] = {}
    for row in rows:
        key = row_key(row)
        if key in by_key:
            raise ConfigError(field, "/".join(key), "holds this row more than once",
                              "keep one row per base/defense/attack/lr/metric")
        problem = row_problem(row)
        if problem:
            raise ConfigError(f"{field} row {'/'.join(key)}", {c: row[c] for c in NUMBERS}, problem,
                              "rerun that cell or restore the file frpo-bench wrote; such a number cannot be gated")
        by_key[key] = row
    return by_key


NUMBERS = ("mean", "std_over_seeds", "ci95_low", "ci95_high", "n")


def row_problem(row: Row) -> str | None:
    """What makes a row's numbers impossible for its metric, or None."""
    values = [row[c] for c in ("mean", "std_over_seeds", "ci95_low", "ci95_high")]
    if not all(math.isfinite(v) for v in values):
        return "has a non-finite (nan or inf) mean, spread or interval"
    if row["n"] < 1 or row["n_seeds"] < 1 or row["std_over_seeds"] < 0:
        return "has no scored sample, no seed or a negative spread"
    if row["ci95_low"] > row["ci95_high"]:
        return "has a 95% interval whose low end lies above its high end"
    if row.get("unit") in BOUNDED_UNITS and not all(-SLACK <= v <= 1 + SLACK for v in values):
        return f"has a value outside [0, 1], the range of a {row['unit']}"
    if row.get("unit") == "nats" and min(values) < -SLACK:
        return "has a negative value for a divergence or loss in nats"
    return None


SLACK = 1e-4  # the CSV's four decimals


def with_units(rows: list[Row], others: list[Row], samples: dict[tuple, dict]) -> list[Row]:
    """Rows whose unit column is blank (files from before it) take the unit the other leaderboard gives the same
    row; a metric whose per-prompt scores all lie in [0, 1] is bounded like a rate."""
    known = {row_key(r): r["unit"] for r in others if r.get("unit")}
    out = []
    for row in rows:
        unit = row.get("unit") or known.get(row_key(row), "")
        scores = [v for seed in samples.get(row_key(row), {}).values() for v in seed]
        if not unit and scores and all(0 <= v <= 1 for v in scores):
            unit = "rate"
        out.append({**row, "unit": unit})
    return out


def compare(baseline: list[Row], current: list[Row], tolerances: dict[str, float], allow_new_metrics: bool = False,
            alpha: float = 0.05, samples: tuple[dict, dict] = ({}, {})) -> list[Verdict]:
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
        verdicts.append(judge_row(row, cur, tolerances.get(row["metric"], 0.0), alpha,
                                  samples[0].get(key), samples[1].get(key)))
    return verdicts


def judge_row(row: Row, cur: Row, tolerance: float, alpha: float = 0.05,
              base_seeds: dict | None = None, cur_seeds: dict | None = None) -> Verdict:
    higher = row["higher_is_better"]
    worse_by = (row["mean"] - cur["mean"]) if higher else (cur["mean"] - row["mean"])
    p, interval, test = move_test(row, cur, worse_by, tolerance, base_seeds, cur_seeds)
    regressed = worse_by > tolerance + 1e-12 and p < alpha
    status = "REGRESSED" if regressed else ("improved" if worse_by < 0 else "ok")
    return Verdict(row_key(row), row["mean"], cur["mean"], worse_by, interval, p, test, tolerance, status)


def move_test(row: Row, cur: Row, worse_by: float, tolerance: float, base_seeds: dict | None,
              cur_seeds: dict | None) -> tuple[float, tuple, str]:
    """(p, 95% interval of the move, test name): on per-prompt scores where both sides have them."""
    sign = -1.0 if row["higher_is_better"] else 1.0  # oriented: positive = worse
    if not base_seeds or not cur_seeds:
        se_base = sig.standard_error(row["mean"], row["ci95_low"], row["ci95_high"], row["n"])
        se_cur = sig.standard_error(cur["mean"], cur["ci95_low"], cur["ci95_high"], cur["n"])
        p, interval = sig.aggregate_z(worse_by, tolerance, se_base, se_cur)
        return p, interval, "z (means and intervals)"
    # a row's prompts are chosen by its data reference, never by the run's seed: seeds match as the leaderboard's
    # paired differences match them (by value, by order when the runs share none), so a rerun under other seeds
    # pairs, as long as every seed of both sides is matched and scored as many prompts
    matched = match_seeds(cur_seeds, base_seeds)
    if len(matched) == len(base_seeds) == len(cur_seeds) and all(len(c) == len(b) for c, b in matched):
        base, now = [v for _, b in matched for v in b], [v for c, _ in matched for v in c]
        moves = [sign * (c - b) for b, c in zip(base, now)]
        _, low, high = paired_bootstrap([[sign * v for v in c] for c, _ in matched],
                                        [[sign * v for v in b] for _, b in matched])
        if sig.is_binary(base, now) and tolerance == 0:
            return sig.mcnemar(base, now, row["higher_is_better"]), (low, high), "McNemar (paired, exact)"
        return sig.paired_sign_flip(moves, tolerance), (low, high), "sign flip (paired)"
    base = [v for s in sorted(base_seeds) for v in base_seeds[s]]
    now = [v for s in sorted(cur_seeds) for v in cur_seeds[s]]
    oriented = ([sign * v for v in base], [sign * v for v in now])
    return (sig.two_sample_permutation(*oriented, tolerance), sig.unpaired_interval(*oriented),
            "permutation (unpaired)")


def per_sample_beside(csv_path: Path) -> dict[tuple, dict]:
    """row key -> {seed: per-prompt scores} from the run's results.jsonl beside its leaderboard.csv (for a
    copy named NAME.csv: NAME.results.jsonl); {} when there is none. Final models only, one per score."""
    path = Path(csv_path)
    found = [p for p in (path.with_name("results.jsonl") if path.name == "leaderboard.csv" else None,
                         path.with_name(f"{path.stem}.results.jsonl")) if p is not None and p.is_file()]
    if not found:
        return {}
    out: dict[tuple, dict] = {}
    seen: set[str] = set()  # identical stages under several seeds (greedy, unattacked) count once, as in the row
    try:
        lines = found[0].read_text(encoding="utf-8").split("\n")  # not splitlines: JSON may hold a raw U+2028
    except UnicodeDecodeError as err:
        raise ConfigError(str(found[0]), "bytes", f"is not UTF-8 text ({err.reason})", "restore the results.jsonl "
                          "frpo-bench wrote, or move it away to gate on the CSV alone") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            scores = [float(v) for v in record["per_sample"]]
            if not all(math.isfinite(v) for v in scores):
                raise ValueError("a non-finite per-prompt score")
            if record.get("unit") in BOUNDED_UNITS and not all(0 <= v <= 1 for v in scores):
                raise ValueError(f"a per-prompt score outside [0, 1] for a {record['unit']}")
            final, key, seed = not record.get("intermediate"), row_key(record), record["seed"]
            score_key = record["score_key"] + record["metric"]
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise ConfigError(f"{found[0]}, line {number}", line.strip()[:80], f"is not a result record ({err})",
                              "restore the results.jsonl frpo-bench wrote, or move it away to gate on the CSV "
                              "alone") from None
        if final and score_key not in seen:
            seen.add(score_key)
            out.setdefault(key, {})[seed] = scores
    return out


def diff_table(verdicts: list[Verdict]) -> str:
    header = ["base", "defense", "attack", "lr", "metric", "baseline", "current", "worse by", "95% CI", "p",
              "test", "tolerance", "status"]
    return render_table(header, [[*v.key[:3], v.key[3] or "-", v.key[4], f"{v.baseline:.4f}", f"{v.current:.4f}",
                                  f"{v.worse_by:+.4f}", f"[{v.interval[0]:+.4f}, {v.interval[1]:+.4f}]",
                                  f"{v.p:.4f}", v.test, f"{v.tolerance:g}", v.status] for v in verdicts])


def check_files(baseline: Path, current: Path, tolerance_items: list[str],
                allow_new_metrics: bool = False, alpha: float = 0.05, family: str = "none") -> tuple[int, str]:
    for name, path in (("--baseline", baseline), ("--current", current)):
        if not Path(path).is_file():
            raise ConfigError(name, str(path), "is not a file", "give a leaderboard.csv written by frpo-bench")
    if not 0 < alpha < 0.5:
        raise ConfigError("--alpha", alpha, "must be between 0 and 0.5", "e.g. --alpha 0.05 (one-sided)")
    if family not in FAMILIES:
        raise ConfigError("--family", family, "is not a family-wise rule", f"use one of {', '.join(FAMILIES)}")
    samples = (per_sample_beside(baseline), per_sample_beside(current))
    base_rows, current_rows = read_csv(baseline, "--baseline"), read_csv(current, "--current")
    verdicts = compare(with_units(base_rows, current_rows, samples[0]), with_units(current_rows, base_rows, samples[1]),
                       parse_tolerances(tolerance_items), allow_new_metrics, alpha, samples)
    if family == "holm":
        verdicts = family_wise(verdicts, alpha)
    regressed = [v for v in verdicts if v.status == "REGRESSED"]
    summary = (f"{len(regressed)} of {len(verdicts)} metrics regressed" if regressed
               else f"all {len(verdicts)} metrics within bounds")
    rule = ("Holm's step-down over all metrics: a false alarm on any of them at most alpha" if family == "holm"
            else "p < alpha for each metric")
    return (1 if regressed else 0), (diff_table(verdicts) + "\n\n" + summary + f" (one-sided tests at alpha {alpha:g}: "
                                     f"a metric fails when it is worse by more than its tolerance and {rule})")


FAMILIES = ("none", "holm")


def family_wise(verdicts: list[Verdict], alpha: float) -> list[Verdict]:
    """The verdicts with a regression kept only where Holm's step-down over every metric's p rejects it."""
    rejected = sig.holm([v.p for v in verdicts], alpha)
    return [v if v.status != "REGRESSED" or keep else replace(v, status="ok")
            for v, keep in zip(verdicts, rejected)]
