"""A judge's recorded agreement with people (results/assets/human_agreement.csv, written by
`frpo-bench judges validate --record`), shown beside the numbers the judge produces: in leaderboard.md's
judge table, report.html's provenance, and judge_agreement.csv's rows against humans."""
from __future__ import annotations

import csv
import io

RECORD_FILE = "human_agreement.csv"


def recorded() -> dict[str, dict]:
    """judge name (as rows give it) -> its recorded human agreement (assets/human_agreement.csv)."""
    from importlib import resources
    source = resources.files("frpo_bench.results").joinpath("assets", RECORD_FILE)
    if not source.is_file():
        return {}
    return {r["judge_name"]: r for r in csv.DictReader(io.StringIO(source.read_text(encoding="utf-8")))}


def summary_text(entry: dict) -> str:
    """How a leaderboard names a judge's recorded human agreement."""
    return (f"kappa {_number(entry, 'kappa'):.2f} [{_number(entry, 'kappa_ci95_low'):.2f}, "
            f"{_number(entry, 'kappa_ci95_high'):.2f}] "
            f"vs human labels, {entry['label_set']}: {entry['sources']}, n {entry['n']}")


def provenance_markdown(rows: list[dict]) -> str:
    """leaderboard.md's judge section: every metric's judge, with its recorded human agreement where measured."""
    known = recorded()
    judges = sorted({(r["metric"], r["judge"]) for r in rows})
    lines = ["**Judges** (what decided each metric; agreement with people where it was measured: "
             "`frpo-bench judges validate`)", "", "| metric | judge | vs humans |", "|---|---|---|"]
    for metric, judge in judges:
        lines.append(f"| {metric} | {judge} | {summary_text(known[judge]) if judge in known else 'not checked against people'} |")
    return "\n".join(lines) + "\n\n"


def human_agreement_rows(judged_metrics: dict[str, str], cell: dict) -> list[dict]:
    """judge_agreement.csv's "vs humans" rows: per safety metric of the run (metric -> judge name) whose judge
    has a recorded validation, its agreement with people there (unsafe = not refused)."""
    known = recorded()
    rows = []
    for metric, judge in sorted(judged_metrics.items()):
        entry = known.get(judge)
        if entry is None:
            continue
        rows.append({**cell, "judge_a": metric, "judge_b": f"human labels: {entry['label_set']}", "n": int(entry["n"]),
                     **{k: _number(entry, k) for k in ("agreement", "agreement_ci95_low", "agreement_ci95_high",
                                                       "kappa", "kappa_ci95_low", "kappa_ci95_high")},
                     "unsafe_rate_a": 1 - _number(entry, "judge_refusal_rate"),
                     "unsafe_rate_b": 1 - _number(entry, "human_refusal_rate")})
    return rows


def _number(entry: dict, name: str) -> float:
    """A recorded figure; nan where a record written by an older version lacks it (a run never fails on it)."""
    try:
        return float(entry.get(name) or "nan")
    except ValueError:
        return float("nan")
