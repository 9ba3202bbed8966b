"""A search's outputs: the trial table (every trial: setting, objective, constraint, pruning, cost, stage keys),
the best-so-far plot against attack compute, a leaderboard.md section, Optuna's journals, and the budget and
setting behind each `search:<attack>` leaderboard row (its notes)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from frpo_bench.files import write_text_atomic

COLUMNS = ["attack", "defense", "seed", "trial", "state", "setting", "objective_metric", "objective",
           "objective_half_width", "capability", "capability_bound", "feasible", "pruned_at", "rungs", "steps_planned",
           "steps_trained", "seconds", "best_so_far", "best_trial", "study_stopped", "stage_keys", "note"]


def annotate(records: list[dict], outcomes: list) -> None:
    """A search row's notes say what the search spent and found (the budget is the same for every defense)."""
    notes = {(r.label, o.defense, "" if r.lr is None else f"{r.lr:g}"): o.budget_note() + shares_note(r)
             for o in outcomes for r in o.reruns}
    for record in records:
        note = notes.get((record["attack"], record["defense"], record["attack_lr"]))
        if note:
            record["notes"] = "; ".join(n for n in (record.get("notes"), note) if n)


def shares_note(rerun) -> str:
    """Which capability bounds a re-run setting is the search's best within (none when no bound applies)."""
    if not rerun.shares:
        return ""
    shares = ", ".join(f"{s:g}" for s in rerun.shares)
    return f"; trial {rerun.trial.number} is the best keeping capability >= {shares} x the defended model's"


def trial_rows(outcomes: list) -> list[dict]:
    """Every trial in trial order, with the study's best feasible objective after it (the convergence curve) and
    how the study ended (converged under its stop rule, or its budget spent)."""
    from frpo_bench.search_options import best_trajectory
    rows = []
    for o in outcomes:
        trials = sorted(o.trials, key=lambda t: t.number)
        for t, best in zip(trials, best_trajectory(trials, o.search.direction)):
            rows.append({"attack": t.attack, "defense": t.defense, "seed": t.seed, "trial": t.number, "state": t.state,
                         "setting": json.dumps(t.setting, sort_keys=True), "objective_metric": o.search.objective,
                         "objective": fmt(t.objective), "objective_half_width": fmt(t.half_width),
                         "best_so_far": "" if best is None else fmt(best[0]),
                         "best_trial": "" if best is None else best[2], "study_stopped": o.stopped,
                         "capability": fmt(t.capability),
                         "capability_bound": fmt(t.bound), "feasible": "" if t.feasible is None else str(t.feasible).lower(),
                         "pruned_at": "" if t.pruned_at is None else t.pruned_at, "rungs": json.dumps(t.rungs),
                         "steps_planned": t.steps_planned, "steps_trained": t.steps_trained,
                         "seconds": f"{t.seconds:.1f}", "stage_keys": " ".join(t.stage_keys), "note": t.note})
    return rows


def fmt(value) -> str:
    return "" if value is None else f"{value:.4f}"


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def best_so_far(outcome) -> list[tuple[int, int, float]]:
    """(trials finished, cumulative attack steps, best feasible objective so far) after each trial, from the first
    feasible one on."""
    from frpo_bench.search_options import best_trajectory
    trials = sorted(outcome.trials, key=lambda t: t.number)
    spent, points = 0, []
    for count, (t, best) in enumerate(zip(trials, best_trajectory(trials, outcome.search.direction)), 1):
        spent += t.steps_trained
        if best is not None:
            points.append((count, spent, best[0]))
    return points


def plot(outcomes: list, path: Path) -> Path | None:
    """One column per attack, a line per defended model: the best feasible objective against trials (top) and
    against attack optimizer steps (bottom); a study that converged ends in a filled marker."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    attacks = list(dict.fromkeys(o.attack for o in outcomes))
    if not attacks:
        return None
    fig, axes = plt.subplots(2, len(attacks), figsize=(4.6 * len(attacks), 6.4), squeeze=False)
    for column, attack in enumerate(attacks):
        mine = [o for o in outcomes if o.attack == attack]
        for row, (x_index, x_label) in enumerate(((0, "trials"), (1, "attack optimizer steps spent"))):
            ax = axes[row][column]
            for o in mine:
                points = best_so_far(o)
                if not points:
                    continue
                line = ax.step([p[x_index] for p in points], [p[2] for p in points], where="post", marker="o",
                               markersize=3, label=f"{o.defense} seed {o.seed} ({o.stopped})")[0]
                ax.plot([points[-1][x_index]], [points[-1][2]], marker="s" if o.stopped == "converged" else "x",
                        markersize=8, color=line.get_color())
            ax.set_title(f"search: {attack}", fontsize=9)
            ax.set_xlabel(x_label)
            ax.set_ylabel(f"best feasible {mine[0].search.objective}")
            if row == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(outcomes: list) -> str:
    lines = ["", "## Searched attacks", "",
             "Each defended model gets the same budget; the row `search:<attack>` in the tables above is the best "
             "feasible setting re-run with new seeds on held-out prompts (search_trials.csv has every trial, "
             "plots/search_best_so_far.png the best against compute).", "",
             "| attack | defense | seed | trials | pruned | infeasible | attack steps | stopped | best setting | "
             "found at trial | trials (attack steps) to break | searched objective | capability (bound) | "
             "best within each capability share |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        best = o.best
        setting = ", ".join(f"{k}={json.dumps(v)}" for k, v in best.setting.items()) if best else "none feasible"
        lines.append(f"| {o.attack} | {o.defense} | {o.seed} | {len(o.trials)} | "
                     f"{sum(t.state == 'pruned' for t in o.trials)} | {sum(t.feasible is False for t in o.trials)} | "
                     f"{sum(t.steps_trained for t in o.trials)} | {o.stopped} | {setting} | "
                     f"{best.number if best else '-'} | {to_break(o)} | "
                     f"{fmt(best.objective) if best else '-'} ({o.search.objective}, optimistic) | "
                     f"{fmt(best.capability) if best else '-'} ({fmt(best.bound) if best else '-'}) | "
                     f"{by_share(o)} |")
    return "\n".join(lines) + "\n"


def to_break(outcome) -> str:
    """Trials, and attack optimizer steps, until the best came within its final interval half-width."""
    from frpo_bench.search_options import best_trajectory, trials_to_break
    trials = sorted(outcome.trials, key=lambda t: t.number)
    count = trials_to_break(best_trajectory(trials, outcome.search.direction), outcome.search.direction)
    return "-" if count is None else f"{count} ({sum(t.steps_trained for t in trials[:count])})"


def by_share(outcome) -> str:
    """Each capability share and the trial that is the best within its bound (re-run as the named row)."""
    parts = [f">= {share:g}: trial {r.trial.number} ({fmt(r.trial.objective)}, `{r.label}`)"
             for r in outcome.reruns for share in r.shares]
    return "; ".join(parts) or "-"


def write(run_dir: Path, outcomes: list) -> dict[str, Path]:
    """search_trials.csv, plots/search_best_so_far.png, search/<study>.journal, and the section at the end of
    leaderboard.md."""
    paths = {"search_trials": run_dir / "search_trials.csv"}
    write_text_atomic(paths["search_trials"], to_csv(trial_rows(outcomes)))
    for o in outcomes:
        journal = run_dir / "search" / f"{o.attack}-{o.defense}-seed{o.seed}.journal"
        journal.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(journal, o.journal)
    picture = plot(outcomes, run_dir / "plots" / "search_best_so_far.png")
    if picture:
        paths["search_plot"] = picture
    board = run_dir / "leaderboard.md"
    if board.is_file():
        write_text_atomic(board, board.read_text() + markdown(outcomes))
    return paths
