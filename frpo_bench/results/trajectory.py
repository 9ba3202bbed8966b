"""Metrics along an attack: trajectory.csv and its plots.

A trajectory point is (defense cell, attack, lr, step, metric). Step 0 is the defended model itself
(the unattacked cell, scored on the evaluation's full prompt set), intermediate steps are the attack's
kept checkpoints (scored on the first `trajectory.n` prompts of the same selection), and the last
step is the attack's final model (full set again). The attack's own training loss comes with every
logged step. Means and 95% intervals are over seeds then prompts, as in the leaderboard.
"""
from __future__ import annotations

import math
from pathlib import Path

from frpo_bench.files import write_text_atomic
from frpo_bench.results.leaderboard import seed_bootstrap_ci
from frpo_bench.results.schema import PROVENANCE, SCHEMA_VERSION, to_csv

TRAIN_LOSS = "train_loss"
# an attack trainer's logged series, by its log key: the loss, and an RL attack's mean reward and KL to its start
TRAINING_CURVES = {"loss": (TRAIN_LOSS, False), "reward": ("train_reward", True), "kl": ("train_kl", False)}
CURVE_METRICS = frozenset(name for name, _ in TRAINING_CURVES.values())
KL_EVALUATOR = "kl_to_start"
COLUMNS = ["schema_version", "recipe", "model", "base", "defense", "attack", "attack_lr", "step", "metric",
           "higher_is_better", "mean", "ci95_low", "ci95_high", "n_seeds", "n", *PROVENANCE]
LINE = ("base", "defense", "attack", "attack_lr")


def points(records: list[dict]) -> list[dict]:
    """The records that make trajectories: every intermediate point, and for each attacked line that has
    any, its step-0 (unattacked) and final records of the same metrics, plus every training-loss record."""
    inner = [r for r in records if r.get("intermediate")]
    wanted = {(r["base"], r["defense"], r["attack"], r["attack_lr"], r["metric"]) for r in inner}
    out = list(inner)
    for r in records:
        if r.get("intermediate") or r["metric"] in CURVE_METRICS:
            continue
        if r["attack"] != "none" and (r["base"], r["defense"], r["attack"], r["attack_lr"], r["metric"]) in wanted:
            out.append(r)
        elif r["attack"] == "none":  # the start of every attacked line of this defense cell
            for base, defense, attack, lr, metric in wanted:
                if (base, defense, metric) == (r["base"], r["defense"], r["metric"]):
                    out.append({**r, "attack": attack, "attack_lr": lr, "step": 0})
    return out + [r for r in records if r["metric"] in CURVE_METRICS]


def aggregate(records: list[dict]) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for r in points(records):
        key = (*(r[k] for k in LINE), r["metric"], int(r["step"]))
        groups.setdefault(key, {})[r["score_key"]] = r  # identical stages count once, as in the leaderboard
    rows = []
    for key in sorted(groups, key=lambda k: (k[:4], k[4], k[5])):
        seeds = list(groups[key].values())
        first = seeds[0]
        low, high = seed_bootstrap_ci([s["per_sample"] for s in seeds])
        rows.append({"schema_version": SCHEMA_VERSION, "recipe": first["recipe"], "model": first["model"],
                     **{k: first[k] for k in LINE}, "step": key[5], "metric": key[4],
                     "higher_is_better": first["higher_is_better"],
                     "mean": sum(s["value"] for s in seeds) / len(seeds), "ci95_low": low, "ci95_high": high,
                     "n_seeds": len(seeds), "n": sum(s["n"] for s in seeds), **{k: first[k] for k in PROVENANCE}})
    return rows


def loss_records(history: list[dict], base: dict) -> list[dict]:
    """One record per logged optimizer step of an attack and series it logged (its training loss; an RL attack's
    reward and KL too), shaped like a metric record."""
    return [{**base, "metric": metric, "step": int(h["step"]), "value": float(h[key]), "per_sample": [float(h[key])],
             "n": 1, "higher_is_better": higher, "score_key": base["score_key"], "evaluator": "trainer log",
             "judge": "", "template": "", "dataset": "", "split": "", "dataset_revision": ""}
            for key, (metric, higher) in TRAINING_CURVES.items()
            for h in history if key in h and "step" in h and math.isfinite(float(h[key]))]


def write(run_dir: Path, records: list[dict]) -> list[dict]:
    """trajectory.csv and plots/trajectory_*.png; nothing when no attack has a trajectory or a loss curve."""
    rows = aggregate(records)
    if rows:
        write_text_atomic(run_dir / "trajectory.csv", to_csv(rows, COLUMNS))
        plot_all(rows, run_dir / "plots")
    return rows


def plot_all(rows: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    paths = [plot_metric_vs_step(rows, m, out_dir) for m in metrics]
    kl_metrics = [m for m in metrics if next(r for r in rows if r["metric"] == m)["evaluator"].startswith(KL_EVALUATOR)]
    paths += [plot_metric_vs_kl(rows, m, kl, out_dir) for kl in kl_metrics for m in metrics
              if m not in kl_metrics and m not in CURVE_METRICS]
    return [p for p in paths if p]


def _attack_lines(rows: list[dict]) -> list[tuple]:
    return list(dict.fromkeys((r["attack"], r["attack_lr"]) for r in rows))


def plot_metric_vs_step(rows: list[dict], metric: str, out_dir: Path) -> Path | None:
    """One panel per (attack, lr); one line per defense cell, its 95% interval as a band."""
    import matplotlib.pyplot as plt
    mine = [r for r in rows if r["metric"] == metric]
    panels = _attack_lines(mine)
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, (attack, lr) in zip(axes[0], panels):
        for base, defense in dict.fromkeys((r["base"], r["defense"]) for r in mine):
            line = sorted((r for r in mine if (r["base"], r["defense"], r["attack"], r["attack_lr"]) ==
                           (base, defense, attack, lr)), key=lambda r: r["step"])
            steps = [r["step"] for r in line]
            ax.plot(steps, [r["mean"] for r in line], marker="o" if metric not in CURVE_METRICS else None, label=defense)
            ax.fill_between(steps, [r["ci95_low"] for r in line], [r["ci95_high"] for r in line], alpha=0.2)
        ax.set_title(f"{attack} lr={lr}", fontsize=9)
        ax.set_xlabel("attack step")
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / f"trajectory_{metric}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metric_vs_kl(rows: list[dict], metric: str, kl_metric: str, out_dir: Path) -> Path | None:
    """`metric` against the KL to the model before the attack, at matching steps, per defense and attack."""
    import matplotlib.pyplot as plt
    kl = {(*(r[k] for k in LINE), r["step"]): r["mean"] for r in rows if r["metric"] == kl_metric}
    mine = [r for r in rows if r["metric"] == metric and (*(r[k] for k in LINE), r["step"]) in kl]
    if not mine:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for line_key in dict.fromkeys(tuple(r[k] for k in LINE) for r in mine):
        line = sorted((r for r in mine if tuple(r[k] for k in LINE) == line_key), key=lambda r: r["step"])
        xs = [kl[(*line_key, r["step"])] for r in line]
        ax.plot(xs, [r["mean"] for r in line], marker="o", label=f"{line_key[1]} / {line_key[2]} {line_key[3]}")
    ax.set_xscale("symlog", linthresh=0.1)  # KL spans 0 to tens of nats across attacks: linear near 0, log beyond
    ax.set_xlabel(f"{kl_metric}: KL to the pre-attack model (nats/sequence, symlog)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / f"trajectory_{metric}_vs_{kl_metric}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
