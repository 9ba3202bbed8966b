"""Per-seed result records -> leaderboard rows aggregated over seeds -> CSV, Markdown, plots and a
printed table. The same records give byte-identical files (schema: results.schema)."""
from __future__ import annotations

import math
from pathlib import Path

from frpo_bench.files import write_text_atomic
from frpo_bench.results.schema import (
    PROVENANCE,
    ROW_KEY,
    SCHEMA_VERSION,
    Row,
    cell_key,
    render_table,
    row_key,
    short_revision,
    to_csv,
)


def seed_bootstrap_ci(groups: list[list[float]], seed: int = 0, samples: int = 2000) -> tuple[float, float]:
    """Two-level percentile bootstrap of the mean: resample seeds, then prompts within each."""
    import numpy as np

    from frpo_bench.results.bootstrap import percentile_interval, two_level_means
    arrays = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not arrays:
        return float("nan"), float("nan")
    return percentile_interval(two_level_means(arrays, np.random.default_rng(seed), samples))


def aggregate(records: list[dict]) -> list[Row]:
    groups: dict[tuple, dict[str, dict]] = {}
    for r in records:
        # identical stages (e.g. an identity defense with no attack, greedy decoding) count once
        groups.setdefault(row_key(r), {})[r["score_key"]] = r
    rows = []
    for key in sorted(groups, key=_sort_key):
        seeds = list(groups[key].values())
        first = seeds[0]
        values = [s["value"] for s in seeds]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        low, high = seed_bootstrap_ci([s["per_sample"] for s in seeds])
        rows.append({**{k: first[k] for k in ("recipe", "model", *ROW_KEY, "higher_is_better", *PROVENANCE)},
                     "schema_version": SCHEMA_VERSION, "mean": mean, "std_over_seeds": std, "ci95_low": low,
                     "ci95_high": high, "n_seeds": len(seeds), "n": sum(s["n"] for s in seeds),
                     "notes": "; ".join(dict.fromkeys(n for s in seeds for n in s.get("notes", "").split("; ") if n)),
                     "unit": first.get("unit", ""), **seed_mean_compute(seeds)})
    return rows


def seed_mean_compute(seeds: list[dict]) -> dict:
    """The attack's steps and tokens, averaged over seeds (whole numbers); blank where unknown."""
    out = {}
    for column in ("attack_steps", "attack_tokens"):
        values = [s.get(column, "") for s in seeds]
        out[column] = "" if any(v == "" or v is None for v in values) else round(sum(values) / len(values))
    return out


def _sort_key(key: tuple) -> tuple:
    base, defense, attack, lr, metric = key
    return ({"raw": 0, "-": 1, "aligned": 1}.get(base, 2), defense != "none", defense, attack != "none", attack,
            float(lr) if lr else 0.0, metric)


def table(rows: list[Row]) -> str:
    """A wide text table: one line per cell, one column per metric, 'mean [ci95]'."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    cells: dict[tuple, dict] = {}
    for r in rows:
        cells.setdefault(cell_key(r), {})[r["metric"]] = r
    lines = []
    for (base, defense, attack, lr), by_metric in cells.items():
        line = [base, defense, attack, lr or "-"]
        for m in metrics:
            r = by_metric.get(m)
            line.append(f"{r['mean']:.2f} [{r['ci95_low']:.2f},{r['ci95_high']:.2f}]" if r else "")
        lines.append(line)
    sources = sorted({f"{r['metric']}: {r['evaluator']}, judge {r['judge']}, data {r['dataset']}/{r['split']}@"
                      f"{short_revision(r['dataset_revision'])}, n/seed~{r['n'] // max(r['n_seeds'], 1)}"
                      for r in rows})
    text = render_table(["base", "defense", "attack", "lr", *metrics], lines)
    return "\n".join([text, "", "intervals: 95% bootstrap (seeds, then prompts)", *sources])


def write(run_dir: Path, records: list[dict], capability_metric: str | None,
          retention, trajectory_rows: list[dict] = ()) -> tuple[Path, list[Row]]:
    """leaderboard.csv, leaderboard.md, summary.csv, paired.csv and plots/*.png, each written atomically;
    the headline of leaderboard.md also shows `trajectory_rows`' points inside each attack."""
    from frpo_bench.results import headline, paired, report, summary
    rows = aggregate(records)
    worst = summary.worst_cases(rows, capability_metric, retention)
    differences = paired.paired_differences(records)
    path = run_dir / "leaderboard.csv"
    write_text_atomic(path, to_csv(rows))
    write_text_atomic(run_dir / "summary.csv", summary.to_csv(worst))
    write_text_atomic(run_dir / "paired.csv", paired.paired_csv(differences))
    from frpo_bench.results.human_agreement import provenance_markdown
    write_text_atomic(run_dir / "leaderboard.md", headline.to_markdown(rows, worst, capability_metric, retention, trajectory_rows)
                      + provenance_markdown(rows)
                      + "**All rows** (one per cell and metric, with n, judge and data)\n\n"
                      + report.to_markdown(rows, worst, differences))
    report.plot_all(rows, run_dir / "plots", capability_metric)
    return path, rows
