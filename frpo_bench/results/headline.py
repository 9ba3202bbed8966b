"""The table a reader opens first: one row per model of the grid (base, defense, attack, learning rate, and
the attack's step where it has a trajectory), one column per metric with its 95% interval under the mean; then, per defense, how robust it is: its
unattacked value, the worst attack, the worst attack that keeps capability, and the capability kept."""
from __future__ import annotations

import math

from frpo_bench.results.schema import CELL_KEY, Row, cell_key, format_value, row_key


def arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def inner_steps(trajectory_rows: list[dict], metrics: set[str]) -> list[dict]:
    """The trajectory's points strictly inside each attack, of the leaderboard's metrics: step 0 is the
    unattacked row and the last step is the attacked cell's own (final) row."""
    last: dict[tuple, int] = {}
    for r in trajectory_rows:
        last[cell_key(r)] = max(last.get(cell_key(r), 0), int(r["step"]))
    return [r for r in trajectory_rows if r["metric"] in metrics and 0 < int(r["step"]) < last[cell_key(r)]]


def wide(rows: list[Row], trajectory_rows: list[dict] = ()) -> tuple[list[dict], list[dict]]:
    """(metrics [{name, higher_is_better}], cells [{base, defense, attack, attack_lr, step, <metric>: row}]),
    in leaderboard order, each attacked cell preceded by its intermediate steps (`step` is "" for final
    models, the optimizer step for the points inside an attack)."""
    metrics = {r["metric"]: r["higher_is_better"] for r in rows}
    cells: dict[tuple, dict] = {}
    for r in rows:
        cells.setdefault(cell_key(r), {**dict(zip(CELL_KEY, cell_key(r))), "step": ""})[r["metric"]] = r
    steps: dict[tuple, dict[int, dict]] = {}
    for r in inner_steps(list(trajectory_rows), set(metrics)):
        at = steps.setdefault(cell_key(r), {})
        at.setdefault(int(r["step"]), {**dict(zip(CELL_KEY, cell_key(r))), "step": int(r["step"])})[r["metric"]] = r
    ordered = []
    for key, cell in cells.items():
        ordered += [steps[key][s] for s in sorted(steps.get(key, {}))]
        ordered.append(cell)
    return [{"name": m, "higher_is_better": h} for m, h in metrics.items()], ordered


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
                    "bound": s.get("retention", ""), "bounded_worst": s["retained_worst_mean"],
                    "bounded_worst_by": f"{s['retained_worst_attack']} {s['retained_worst_lr']}".strip(),
                    "capability_kept": kept})
    return out


def to_markdown(rows: list[Row], summaries: list[dict], capability: str | None, retention,
                trajectory_rows: list[dict] = ()) -> str:
    metrics, cells = wide(rows, trajectory_rows)
    with_steps = any(c["step"] != "" for c in cells)
    head = [m["name"] + " " + arrow(m["higher_is_better"]) for m in metrics]
    lines = ["**Headline**: every model of the grid, one column per metric (mean over seeds; 95% interval under "
             "it; ↑ higher is better, ↓ lower)" + (_STEP_NOTE if with_steps else ""), "",
             "| base | defense | attack | lr | " + ("step | " if with_steps else "") + " | ".join(head) + " |",
             "|---|---|---|---|" + ("---|" if with_steps else "") + "---|" * len(metrics)]
    for cell in cells:
        values = [_mean_and_interval(cell.get(m["name"])) for m in metrics]
        step = (f"{cell['step'] if cell['step'] != '' else 'final' if cell['attack'] != 'none' else '-'} | "
                if with_steps else "")
        lines.append(f"| {cell['base']} | {cell['defense']} | {cell['attack']} | {cell['attack_lr'] or '-'} | "
                     + step + " | ".join(values) + " |")
    table = robustness(rows, summaries, capability)
    if table:
        from frpo_bench.results.summary import shares
        listed = " / ".join(f"{share:g}" for share in shares(retention))
        bound = (f"attacks that keep {capability} at or above a share ({listed}) of the defense's unattacked value"
                 if capability else "no capability metric named: every attack counts")
        lines += ["", f"**Robustness per defense** (worst over attacks and learning rates; bounded worst: over {bound})",
                  "", "| base | defense | metric | unattacked | worst | by | share kept | bounded worst | by | "
                  "capability kept |", "|---|---|---|---|---|---|---|---|---|---|"]
        for t in table:
            kept = "-" if math.isnan(t["capability_kept"]) else f"{t['capability_kept']:.0%}"
            share = "-" if t["bound"] == "" else f"{t['bound']:g}"
            lines.append(f"| {t['base']} | {t['defense']} | {t['metric']} | {format_value(t['unattacked'])} | "
                         f"{format_value(t['worst'])} | {t['worst_by']} | {share} | {format_value(t['bounded_worst'])} | "
                         f"{t['bounded_worst_by'] or '-'} | {kept} |")
    return "\n".join(lines) + "\n\n"


_STEP_NOTE = ("; an attack's intermediate steps come before its final model, scored on the trajectory's first "
              "prompts only (trajectory.csv gives their n)")


def _mean_and_interval(row: Row | None) -> str:
    if row is None:
        return "-"
    return f"{format_value(row['mean'])}<br>[{format_value(row['ci95_low'])}, {format_value(row['ci95_high'])}]"


def page_data(rows: list[Row], summaries: list[dict], capability: str | None,
              trajectory_rows: list[dict] = ()) -> dict:
    """The same two tables for report.html: numbers stay numbers (the page sorts by them)."""
    metrics, cells = wide(rows, trajectory_rows)
    flat = []
    for cell in cells:
        item = {**{k: cell[k] for k in CELL_KEY}, "step": cell["step"]}
        for m in metrics:
            r = cell.get(m["name"])
            item[m["name"]] = r["mean"] if r else None
            item[m["name"] + " ci"] = [r["ci95_low"], r["ci95_high"]] if r else None
        flat.append(item)
    return {"metrics": metrics, "cells": flat, "with_steps": any(c["step"] != "" for c in cells),
            "robustness": robustness(rows, summaries, capability)}
