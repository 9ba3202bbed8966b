"""The table a reader opens first: one row per model of the grid (base, defense, attack, learning rate),
one column per metric with its 95% interval under the mean; then, per defense, how robust it is: its
unattacked value, the worst attack, the worst attack that keeps capability, and the capability kept."""
from __future__ import annotations

import math

from frpo_bench.results.schema import CELL_KEY, Row, format_value, row_key


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def wide(rows: list[Row]) -> tuple[list[dict], list[dict]]:
    """(metrics [{name, higher_is_better}], cells [{base, defense, attack, attack_lr, <metric>: row}]),
    both in leaderboard order."""
    metrics = {r["metric"]: r["higher_is_better"] for r in rows}
    cells: dict[tuple, dict] = {}
    for r in rows:
        cells.setdefault(tuple(r[k] for k in CELL_KEY), dict(zip(CELL_KEY, (r[k] for k in CELL_KEY))))[r["metric"]] = r
    return [{"name": m, "higher_is_better": h} for m, h in metrics.items()], list(cells.values())


def is_capability(metric: str, capability: str | None) -> bool:
    return bool(capability) and (metric == capability or metric.startswith(f"{capability}:"))


def robustness(rows: list[Row], summaries: list[dict], capability: str | None) -> list[dict]:
    """Per defense and safety metric: unattacked, worst (by which attack), bounded worst (by which) and the
    capability kept at the bounded worst, as a share of the defense's unattacked capability."""
    by_cell = {row_key(r): r for r in rows}
    out = []
    for s in summaries:
        if is_capability(s["metric"], capability):
            continue
        kept = float("nan")
        if s["retained_worst_attack"]:
            at = by_cell.get((s["base"], s["defense"], s["retained_worst_attack"], s["retained_worst_lr"], capability))
            before = by_cell.get((s["base"], s["defense"], "none", "", capability))
            if at and before and before["mean"]:
                kept = at["mean"] / before["mean"]
        out.append({"base": s["base"], "defense": s["defense"], "metric": f"{s['metric']} {arrow(s['higher_is_better'])}",
                    "unattacked": s["unattacked_mean"], "worst": s["worst_mean"],
                    "worst_by": f"{s['worst_attack']} {s['worst_lr']}".strip(),
                    "bounded_worst": s["retained_worst_mean"],
                    "bounded_worst_by": f"{s['retained_worst_attack']} {s['retained_worst_lr']}".strip(),
                    "capability_kept": kept})
    return out


def to_markdown(rows: list[Row], summaries: list[dict], capability: str | None, retention: float) -> str:
    metrics, cells = wide(rows)
    head = [m["name"] + " " + arrow(m["higher_is_better"]) for m in metrics]
    lines = ["**Headline**: every model of the grid, one column per metric (mean over seeds; 95% interval under "
             "it; ↑ higher is better, ↓ lower)", "",
             "| base | defense | attack | lr | " + " | ".join(head) + " |",
             "|---|---|---|---|" + "---|" * len(metrics)]
    for cell in cells:
        values = [_mean_and_interval(cell.get(m["name"])) for m in metrics]
        lines.append(f"| {cell['base']} | {cell['defense']} | {cell['attack']} | {cell['attack_lr'] or '-'} | "
                     + " | ".join(values) + " |")
    table = robustness(rows, summaries, capability)
    if table:
        bound = (f"attacks that keep {capability} at or above {retention:g} of the defense's unattacked value"
                 if capability else "no capability metric named: every attack counts")
        lines += ["", f"**Robustness per defense** (worst over attacks and learning rates; bounded worst: over {bound})",
                  "", "| base | defense | metric | unattacked | worst | by | bounded worst | by | capability kept |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in table:
            kept = "-" if math.isnan(t["capability_kept"]) else f"{t['capability_kept']:.0%}"
            lines.append(f"| {t['base']} | {t['defense']} | {t['metric']} | {format_value(t['unattacked'])} | "
                         f"{format_value(t['worst'])} | {t['worst_by']} | {format_value(t['bounded_worst'])} | "
                         f"{t['bounded_worst_by'] or '-'} | {kept} |")
    return "\n".join(lines) + "\n\n"


def _mean_and_interval(row: Row | None) -> str:
    if row is None:
        return "-"
    return f"{format_value(row['mean'])}<br>[{format_value(row['ci95_low'])}, {format_value(row['ci95_high'])}]"


def page_data(rows: list[Row], summaries: list[dict], capability: str | None) -> dict:
    """The same two tables for report.html: numbers stay numbers (the page sorts by them)."""
    metrics, cells = wide(rows)
    flat = []
    for cell in cells:
        item = {k: cell[k] for k in CELL_KEY}
        for m in metrics:
            r = cell.get(m["name"])
            item[m["name"]] = r["mean"] if r else None
            item[m["name"] + " ci"] = [r["ci95_low"], r["ci95_high"]] if r else None
        flat.append(item)
    return {"metrics": metrics, "cells": flat, "robustness": robustness(rows, summaries, capability)}
