"""report.html: one static, self-contained page per run (no server, no network): the leaderboard as
a sortable, filterable table with intervals; per cell, a drill-down to every prompt, completion and
judge verdict (with the judge's raw output); the worst cases, paired differences, trajectories,
judge agreement and output checks; the plots inlined as PNG data; the run's provenance (recipe,
versions, datasets, judges and template hashes). The page is assets/report.html with the run's data
inlined as JSON."""
from __future__ import annotations

import base64
import csv
import json
from importlib import resources
from pathlib import Path

from frpo_bench.files import write_text_atomic
from frpo_bench.results.agreement import is_safety_judge, judge_output, unsafe_probability
from frpo_bench.results.per_sample import judged_items
from frpo_bench.results.schema import CELL_KEY, short_revision

TABLES = ("summary", "paired", "trajectory", "search_trials")  # CSVs of the run shown as they are (when written)


def cell_id(record: dict) -> str:
    return "|".join(str(record[k]) or "-" for k in CELL_KEY)


def drill_down(records: list[dict], samples: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """cell -> per (model, prompt set): items of prompt, completion and every judge's verdict."""
    out: dict[str, list[dict]] = {}
    for name, first, i, sample, verdicts in judged_items(records, samples):
        if i == 0:
            items: list[dict] = []
            out.setdefault(cell_id(first), []).append({"model": name, "dataset": first["dataset"], "items": items})
        items.append({"prompt": sample.get("prompt", ""), "response": sample.get("response") or "", "verdicts": [
            {"metric": r["metric"], "score": s.get("score"), "judge": r["judge"], "raw": judge_output(s),
             "unsafe": None if s.get("score") is None or not is_safety_judge(r)
             else unsafe_probability(s["score"], r["higher_is_better"]) >= 0.5} for r, s in verdicts]})
    return out


def read_csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        # learning rates stay as written (1e-05): the page prints numbers to 4 decimals
        return [{k: v if k.endswith("lr") else _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _number(text: str):
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text) if text not in ("", "nan") else text
    except ValueError:
        return text


def plots(run_dir: Path) -> list[dict]:
    return [{"name": p.name, "src": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")}
            for p in sorted((run_dir / "plots").glob("*.png"))]


def page_data(run_dir: Path, rows: list[dict], records: list[dict], samples: dict[str, list[dict]],
              agreeing: list[dict], disagreements: list[dict], checks: list[dict], context: dict) -> dict:
    from datetime import datetime, timezone
    judges = {(r["metric"], r["evaluator"], r["judge"], r["template"]) for r in rows}
    return {
        "meta": {"recipe": rows[0]["recipe"] if rows else "", "model": rows[0]["model"] if rows else "",
                 "date": datetime.fromtimestamp(context["date"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "git_sha": context.get("git_sha", "")[:12], "device": context.get("device", ""),
                 "versions": context.get("versions", {}), "datasets": context.get("datasets", {}),
                 "recipe_raw": context.get("recipe", {})},
        "headline": headline_data(rows, records, context.get("leaderboard", {})),
        "leaderboard": [{**r, "cell": cell_id(r), "dataset_revision": short_revision(r["dataset_revision"])} for r in rows],
        "tables": {**{name: read_csv_rows(run_dir / f"{name}.csv") for name in TABLES},
                   "agreement": agreeing, "disagreement": disagreements, "checks": checks},
        "judges": judges_with_validation(judges),
        "plots": plots(run_dir),
        "samples": drill_down(records, samples),
    }


def judges_with_validation(judges) -> list[dict]:
    """The provenance's judge table: each judge with its recorded agreement with people, where measured."""
    from frpo_bench.results.human_agreement import recorded, summary_text
    known = recorded()
    return [{**dict(zip(("metric", "evaluator", "judge", "template"), j)),
             "vs_humans": summary_text(known[j[2]]) if j[2] in known else "not checked against people"}
            for j in sorted(judges)]


def headline_data(rows: list[dict], records: list[dict], settings: dict) -> dict:
    from frpo_bench.results import headline, summary, trajectory
    capability, retention = settings.get("capability_metric"), settings.get("retention", 0.9)
    return headline.page_data(rows, summary.worst_cases(rows, capability, retention), capability,
                              trajectory.aggregate(records))


def without_nan(value):
    """NaN (an undefined kappa, an empty interval) as null: JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(v) for v in value]
    return value


def render(data: dict) -> str:
    template = resources.files("frpo_bench.results").joinpath("assets/report.html").read_text(encoding="utf-8")
    # Inside <script>, "</script" ends the element and "<!--" opens an escaped state that swallows the page's own
    # script; "<" escaped as \u003c (and & as \u0026) means no completion can change the page. JSON.parse reads both.
    payload = (json.dumps(without_nan(data), ensure_ascii=False, allow_nan=False)
               .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    return template.replace("__DATA__", payload)


def write(run_dir: Path, rows: list[dict], records: list[dict], samples: dict[str, list[dict]], agreeing: list[dict],
          disagreements: list[dict], checks: list[dict], context: dict) -> Path:
    path = run_dir / "report.html"
    write_text_atomic(path, render(page_data(run_dir, rows, records, samples, agreeing, disagreements, checks, context)))
    return path
