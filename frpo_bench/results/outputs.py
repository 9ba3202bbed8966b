"""Everything a run directory shows, from its per-seed records: the leaderboard of final models
(leaderboard.csv/.md, summary.csv, paired.csv, plots) and the trajectories along attacks
(trajectory.csv, plots/trajectory_*). `frpo-bench run` and `frpo-bench leaderboard` both write through here."""
from __future__ import annotations

from pathlib import Path

from frpo_bench.results import leaderboard, trajectory
from frpo_bench.results.schema import Row


def final_records(records: list[dict]) -> list[dict]:
    """The records of final models (no intermediate attack step, no training loss): the leaderboard's."""
    return [r for r in records if not r.get("intermediate") and r["metric"] != trajectory.TRAIN_LOSS]


def write(run_dir: Path, records: list[dict], capability_metric: str | None,
          retention: float) -> tuple[Path, list[Row], list[dict]]:
    path, rows = leaderboard.write(run_dir, final_records(records), capability_metric, retention)
    return path, rows, trajectory.write(run_dir, records)
