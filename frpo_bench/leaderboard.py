"""Per-cell results -> leaderboard rows aggregated over seeds -> CSV and a printed table.

The CSV schema is documented in leaderboards/README.md; column order is stable and floats
are formatted deterministically, so the same results give byte-identical files.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from frpo_bench.store import write_text_atomic

SCHEMA_VERSION = 1
COLUMNS = ["schema_version", "recipe", "model", "base", "defense", "attack", "attack_lr", "metric", "higher_is_better",
           "mean", "std_over_seeds", "ci95_low", "ci95_high", "n_seeds", "n", "evaluator", "judge", "template",
           "dataset", "split", "dataset_revision"]
GROUP = ("base", "defense", "attack", "attack_lr", "metric")


def cell_results(cells, dirs: dict[str, Path], recipe) -> list[dict]:
    """One record per (cell, metric): the seed-level result, with its per-sample scores."""
    records = []
    for cell in cells:
        for stage in cell.scores.values():
            result = json.loads((dirs[stage.key] / "result.json").read_text())
            meta = result["meta"]
            for m in result["metrics"]:
                records.append({
                    "recipe": recipe.name, "model": recipe.model.id, "base": cell.base, "defense": cell.defense,
                    "attack": cell.attack, "attack_lr": "" if cell.lr is None else f"{cell.lr:g}",
                    "seed": cell.seed, "metric": m["metric"], "higher_is_better": m["higher_is_better"],
                    "value": m["value"], "n": m["n"], "per_sample": m["per_sample"], "score_key": stage.key,
                    "evaluator": f"{meta['evaluator']} ({meta['version']})", "judge": meta.get("judge", ""),
                    "template": meta.get("template", ""), "dataset": meta["dataset"], "split": meta["split"],
                    "dataset_revision": meta["dataset_revision"]})
    return records


def seed_bootstrap_ci(groups: list[list[float]], seed: int = 0, samples: int = 2000) -> tuple[float, float]:
    """Two-level percentile bootstrap of the mean: resample seeds, then prompts within each."""
    import numpy as np
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not arrays:
        return float("nan"), float("nan")
    means = np.empty(samples)
    for b in range(samples):
        picked = rng.integers(0, len(arrays), size=len(arrays))
        means[b] = np.mean([arrays[i][rng.integers(0, arrays[i].size, size=arrays[i].size)].mean() for i in picked])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def aggregate(records: list[dict]) -> list[dict]:
    groups: dict[tuple, dict[str, dict]] = {}
    for r in records:
        # identical stages (e.g. an identity defense with no attack, greedy decoding) count once
        groups.setdefault(tuple(r[k] for k in GROUP), {})[r["score_key"]] = r
    rows = []
    for key in sorted(groups, key=_sort_key):
        seeds = list(groups[key].values())
        first = seeds[0]
        values = [s["value"] for s in seeds]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        low, high = seed_bootstrap_ci([s["per_sample"] for s in seeds])
        rows.append({**{k: first[k] for k in ("recipe", "model", *GROUP, "higher_is_better", "evaluator", "judge",
                                              "template", "dataset", "split", "dataset_revision")},
                     "schema_version": SCHEMA_VERSION, "mean": mean, "std_over_seeds": std, "ci95_low": low,
                     "ci95_high": high, "n_seeds": len(seeds), "n": sum(s["n"] for s in seeds)})
    return rows


def _sort_key(key: tuple) -> tuple:
    base, defense, attack, lr, metric = key
    return ({"raw": 0, "-": 1, "aligned": 1}.get(base, 2), defense != "none", defense, attack != "none", attack,
            float(lr) if lr else 0.0, metric)


def short_revision(revision) -> str:
    """A commit sha shortened to 12 characters; other revisions (e.g. demo data versions) in full."""
    text = str(revision)
    return text[:12] if len(text) == 40 and all(c in "0123456789abcdef" for c in text) else text


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def to_csv(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(row[c]) for c in columns])
    return buf.getvalue()


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def table(rows: list[dict]) -> str:
    """A wide text table: one line per cell, one column per metric, 'mean [ci95]'."""
    metrics = sorted({r["metric"] for r in rows}, key=lambda m: [r["metric"] for r in rows].index(m))
    cells: dict[tuple, dict] = {}
    for r in rows:
        cells.setdefault((r["base"], r["defense"], r["attack"], r["attack_lr"]), {})[r["metric"]] = r
    header = ["base", "defense", "attack", "lr"] + metrics
    lines = [header]
    for (base, defense, attack, lr), by_metric in cells.items():
        line = [base, defense, attack, lr or "-"]
        for m in metrics:
            r = by_metric.get(m)
            line.append(f"{float(r['mean']):.2f} [{float(r['ci95_low']):.2f},{float(r['ci95_high']):.2f}]" if r else "")
        lines.append(line)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    sources = sorted({f"{r['metric']}: {r['evaluator']}, judge {r['judge']}, data {r['dataset']}/{r['split']}@"
                      f"{short_revision(r['dataset_revision'])}, n/seed~{int(r['n']) // max(int(r['n_seeds']), 1)}"
                      for r in rows})
    return "\n".join(text + ["", "intervals: 95% bootstrap (seeds, then prompts)"] + sources)


def write(run_dir: Path, records: list[dict], capability_metric: str | None = None,
          retention: float = 0.9) -> tuple[Path, list[dict]]:
    """leaderboard.csv, leaderboard.md, summary.csv and plots/*.png, each written atomically."""
    from frpo_bench import report, summary
    rows = aggregate(records)
    worst = summary.worst_cases(rows, capability_metric, retention)
    path = run_dir / "leaderboard.csv"
    write_text_atomic(path, to_csv(rows))
    write_text_atomic(run_dir / "summary.csv", summary.to_csv(worst))
    write_text_atomic(run_dir / "leaderboard.md", report.to_markdown(rows, worst))
    report.plot_all(rows, run_dir / "plots", capability_metric)
    return path, rows
