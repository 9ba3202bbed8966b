"""The records of a search: each trial, each re-run of a best setting, each study's outcome, and how they are
read from the stages a trial built."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from frpo_bench.engine.plan import Cell
from frpo_bench.engine.stages import Stage
from frpo_bench.search_options import SearchConfig


@dataclass
class TrialRecord:
    attack: str
    defense: str
    seed: int
    number: int
    setting: dict
    state: str = "running"  # complete | pruned | invalid
    objective: Optional[float] = None
    half_width: Optional[float] = None  # of the objective's 95% interval over its prompts (bootstrap)
    capability: Optional[float] = None
    bound: Optional[float] = None  # the loosest retention share x the defended model's capability
    feasible: Optional[bool] = None
    pruned_at: Optional[int] = None
    rungs: list = field(default_factory=list)  # [step, objective on the trajectory's prompts]
    steps_planned: int = 0
    steps_trained: int = 0  # what its stages' builds trained (a rung resumed from the last trains only its own)
    seconds: float = 0.0  # the recorded build time of every stage the trial used
    stage_keys: list = field(default_factory=list)
    note: str = ""


@dataclass
class Rerun:
    """A best setting re-run on held-out prompts: the best within the loosest capability bound is the leaderboard's
    `search:<attack>`; a stricter share whose best is another trial gets `search:<attack>@<share>`."""
    label: str
    shares: list  # the retention shares this trial is the best within
    trial: TrialRecord
    lr: Optional[float]


@dataclass
class SearchOutcome:
    attack: str
    defense: str
    seed: int
    search: SearchConfig
    trials: list[TrialRecord]
    best: Optional[TrialRecord]
    defended_capability: Optional[float]
    cells: list[Cell]  # the best setting's re-runs on held-out prompts (leaderboard rows)
    journal: str = ""  # Optuna's journal of the study (JSON lines)
    reruns: list = field(default_factory=list)  # [Rerun]: the settings re-run, the loosest share's first
    stopped: str = ""  # "converged" (the stop rule held) or "budget" (trials or attack steps spent first)

    def budget_note(self) -> str:
        steps = sum(t.steps_trained for t in self.trials)
        found = ", ".join(f"{k}={format_value(v)}" for k, v in self.best.setting.items()) if self.best else "none"
        at = f" (trial {self.best.number})" if self.best else ""
        return (f"searched: {len(self.trials)} trials ({sum(t.state == 'pruned' for t in self.trials)} pruned), "
                f"{steps} attack steps, {self.stopped}; best feasible: {found}{at}; re-run with seeds "
                f"{self.search.reeval_seeds} on held-out prompts")


def trained_steps(attack_dir: Path, steps: int) -> int:
    """The optimizer steps an attack stage's build took: `steps` less those of the earlier stop it resumed
    from (its train_log says; an attack without one trained them all)."""
    log = attack_dir / "train_log.json"
    return steps - json.loads(log.read_text()).get("resumed_from_step", 0) if log.is_file() else steps


def format_value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value, sort_keys=True)


def metric_value(dirs: dict[str, Path], stage: Stage, metric: str) -> float:
    return float(metric_record(dirs, stage, metric)["value"])


def metric_record(dirs: dict[str, Path], stage: Stage, metric: str) -> dict:
    result = json.loads((dirs[stage.key] / "result.json").read_text())
    for m in result["metrics"]:
        if m["metric"] == metric:
            return m
    raise KeyError(f"{metric} not in {dirs[stage.key]}")


def half_width(per_sample: list) -> float:
    """Half the width of the 95% bootstrap interval of a mean over prompts (seeded: the same values give the
    same width)."""
    import numpy as np

    from frpo_bench.results.bootstrap import percentile_interval, two_level_means
    values = np.asarray([v for v in per_sample if v is not None], dtype=float)
    if values.size < 2:
        return 0.0
    low, high = percentile_interval(two_level_means([values], np.random.default_rng(0)))
    return (high - low) / 2


def stage_seconds(dirs: dict[str, Path], stage: Stage) -> float:
    record = dirs[stage.key] / "stage.json"
    return json.loads(record.read_text()).get("seconds", 0.0) if record.is_file() else 0.0


def best_feasible(trials: list[TrialRecord], direction: str) -> Optional[TrialRecord]:
    """The attacker's best among complete trials that kept capability (an infeasible one never counts);
    ties go to the earlier trial."""
    feasible = [t for t in trials if t.state == "complete" and t.feasible]
    sign = 1 if direction == "minimize" else -1
    return min(feasible, key=lambda t: (sign * t.objective, t.number), default=None)
