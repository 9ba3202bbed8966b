"""Human-facing outputs of a leaderboard: a Markdown table and PNG plots.

Plots: for each metric, its mean against the attack learning rate (log x axis, 95% interval
as a band), one line per (defense, attack), with each defense's unattacked value dashed; and,
when a capability metric is named, each safety metric against capability, one colour per defense.
"""
from __future__ import annotations

import math
from pathlib import Path

from frpo_bench.results.headline import arrow
from frpo_bench.results.schema import Row, diverged, format_value, short_revision


def to_markdown(rows: list[Row], summaries: list[dict] | None = None, differences: list[dict] | None = None) -> str:
    lines = ["| base | defense | attack | lr | metric | mean | 95% CI | n (seeds) | judge | data |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = {r["defense"]: r["notes"] for r in rows if r.get("notes") and not diverged(r)}
    for r in rows:
        attack = f"{r['attack']} (diverged)" if diverged(r) else r["attack"]
        lines.append(f"| {r['base']} | {r['defense']}{' *' if r['defense'] in notes else ''} | {attack} | {r['attack_lr'] or '-'} | {r['metric']} {arrow(r['higher_is_better'])} | "
                     f"{format_value(r['mean'])} | [{format_value(r['ci95_low'])}, {format_value(r['ci95_high'])}] | "
                     f"{r['n']} ({r['n_seeds']}) | {r['judge']} | {r['dataset']}/{r['split']}@{short_revision(r['dataset_revision'])} |")
    text = "\n".join(lines) + "\n"
    text += "".join(f"\n\\* {defense}: {note}\n" for defense, note in notes.items())
    if summaries:
        text += ("\n**Worst case per defense** (over attacks and learning rates; *retained*: among attacks that keep "
                 "the capability metric at or above its share of the unattacked value)\n\n| base | defense | metric | "
                 "unattacked | worst | by | share kept | retained worst | by |\n|---|---|---|---|---|---|---|---|---|\n")
        for s in summaries:
            share = "-" if s.get("retention", "") == "" else f"{s['retention']:g}"
            text += (f"| {s['base']} | {s['defense']} | {s['metric']} | {format_value(s['unattacked_mean'])} | "
                     f"{format_value(s['worst_mean'])} | {s['worst_attack']} {s['worst_lr']} | {share} | "
                     f"{format_value(s['retained_worst_mean'])} | {s['retained_worst_attack']} {s['retained_worst_lr']} |\n")
    if differences:
        text += ("\n**Paired differences between defenses** (A - B on the same prompts and matched seeds; 95% "
                 "paired bootstrap: seeds, then prompts)\n\n| base | attack | lr | metric | A | B | A - B | 95% CI | "
                 "seeds |\n|---|---|---|---|---|---|---|---|---|\n")
        for d in differences:
            text += (f"| {d['base']} | {d['attack']} | {d['attack_lr'] or '-'} | {d['metric']} | {d['defense_a']} | "
                     f"{d['defense_b']} | {format_value(d['diff'])} | [{format_value(d['ci95_low'])}, "
                     f"{format_value(d['ci95_high'])}] | {d['n_seeds']} |\n")
    return text


def plot_all(rows: list[Row], out_dir: Path, capability_metric: str | None = None) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in rows if _finite(r["mean"])]  # a metric no sample was scored on has nothing to draw
    paths = [plot_metric_vs_lr(rows, metric, out_dir) for metric in dict.fromkeys(r["metric"] for r in rows)]
    if capability_metric:
        paths += [plot_safety_vs_capability(rows, metric, capability_metric, out_dir)
                  for metric in dict.fromkeys(r["metric"] for r in rows)
                  if metric != capability_metric and not metric.startswith(capability_metric + ":")]
    return [p for p in paths if p]


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _defenses(rows):
    return list(dict.fromkeys((r["base"], r["defense"]) for r in rows))


def plot_metric_vs_lr(rows: list[dict], metric: str, out_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt
    mine = [r for r in rows if r["metric"] == metric]
    attacked = [r for r in mine if r["attack"] != "none"]
    if not attacked:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (base, defense) in enumerate(_defenses(mine)):
        color = colors[i % len(colors)]
        has_series = False
        for j, attack in enumerate(dict.fromkeys(r["attack"] for r in attacked)):
            mine_attack = [r for r in attacked if (r["base"], r["defense"], r["attack"]) == (base, defense, attack)]
            style = ["-", "--", ":", "-."][j % 4]
            for r in (r for r in mine_attack if not r["attack_lr"]):  # an attack that does not train: a level
                ax.axhline(r["mean"], color=color, linestyle=style, linewidth=1.5,
                           label=f"{defense} ({base}) / {attack} (no learning rate)")
                has_series = True
            pts = sorted((float(r["attack_lr"]), r["mean"], r["ci95_low"], r["ci95_high"])
                         for r in mine_attack if r["attack_lr"])
            if not pts:
                continue
            xs, ys, lo, hi = zip(*pts)
            ax.plot(xs, ys, style, marker="o", color=color, label=f"{defense} ({base}) / {attack}")
            ax.fill_between(xs, lo, hi, color=color, alpha=0.12)
            has_series = True
        ref = [r for r in mine if (r["base"], r["defense"], r["attack"]) == (base, defense, "none")]
        if ref:  # a model never attacked (e.g. the raw base) has only this line: name it in the legend
            ax.axhline(ref[0]["mean"], color=color, linestyle=(0, (1, 3)), linewidth=1,
                       label=None if has_series else f"{defense} ({base}), unattacked")
    ax.set_xscale("log")
    ax.set_xlabel("attack learning rate")
    direction = "higher is better" if mine[0]["higher_is_better"] else "lower is better"
    ax.set_ylabel(f"{metric} ({direction})")
    ax.set_title(f"{metric} after fine-tuning attacks\n{mine[0]['judge']}; {mine[0]['dataset']}/{mine[0]['split']}; "
                 "bands: 95% CI; dotted: unattacked", fontsize=9)
    return _save(fig, ax, out_dir / f"{metric.replace(':', '_')}_vs_lr.png")


def plot_safety_vs_capability(rows: list[dict], metric: str, capability: str, out_dir: Path) -> Path | None:
    import matplotlib.pyplot as plt
    by_cell = {}
    for r in rows:
        by_cell.setdefault((r["base"], r["defense"], r["attack"], r["attack_lr"]), {})[r["metric"]] = r
    pairs = [(cell, m[metric], m[capability]) for cell, m in by_cell.items() if metric in m and capability in m]
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (base, defense) in enumerate(dict.fromkeys(c[:2] for c, _, _ in pairs)):
        pts = [(c, s, k) for c, s, k in pairs if c[:2] == (base, defense)]
        for c, s, k in pts:
            x, y = k["mean"], s["mean"]
            ax.errorbar(x, y, xerr=[[x - k["ci95_low"]], [k["ci95_high"] - x]],
                        yerr=[[y - s["ci95_low"]], [s["ci95_high"] - y]], fmt="o" if c[2] != "none" else "*",
                        markersize=5 if c[2] != "none" else 11, color=colors[i % len(colors)], alpha=0.8,
                        label=f"{defense} ({base})" if c == pts[0][0] else None)
    ax.set_xlabel(f"{capability} (capability)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {capability} per cell (star: unattacked; bars: 95% CI)", fontsize=9)
    return _save(fig, ax, out_dir / f"{metric.replace(':', '_')}_vs_{capability.replace(':', '_')}.png")


def _save(fig, ax, path: Path) -> Path:
    import matplotlib.pyplot as plt
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
