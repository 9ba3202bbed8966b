"""Everything a run directory shows, from its per-seed records: the leaderboard of final models
(leaderboard.csv/.md, summary.csv, paired.csv, plots) and the trajectories along attacks
(trajectory.csv, plots/trajectory_*). `frpo-bench run` and `frpo-bench leaderboard` both write through here.
From the per-sample records too (`run` only: they live in the store): judge agreement and degenerate
outputs, lm-eval-shaped results and samples per model, an Inspect log, and report.html."""
from __future__ import annotations

from pathlib import Path

from frpo_bench.results import leaderboard, trajectory
from frpo_bench.results.schema import Row


def final_records(records: list[dict]) -> list[dict]:
    """The records of final models (no intermediate attack step, no training loss): the leaderboard's."""
    return [r for r in records if not r.get("intermediate") and r["metric"] not in trajectory.CURVE_METRICS]


def write(run_dir: Path, records: list[dict], capability_metric: str | None,
          retention) -> tuple[Path, list[Row], list[dict]]:
    points = trajectory.write(run_dir, records)
    path, rows = leaderboard.write(run_dir, final_records(records), capability_metric, retention, points)
    return path, rows, points


def write_browsable(run_dir: Path, records: list[dict], samples: dict[str, list[dict]], settings: dict[str, dict],
                    context: dict, rows: list[Row]) -> dict[str, Path]:
    """judge_agreement.csv, output_checks.csv, lm_eval/, inspect/*.eval and report.html; returns their paths."""
    from frpo_bench.files import write_text_atomic
    from frpo_bench.results import agreement, html_report, inspect_log, lm_eval_format
    from frpo_bench.results.schema import to_csv
    scored = [r for r in records if r["metric"] not in trajectory.CURVE_METRICS]
    agreeing = agreement.agreement_rows(scored, samples)
    checks = agreement.output_check_rows(scored, samples)
    paths = {"judge_agreement": run_dir / "judge_agreement.csv", "output_checks": run_dir / "output_checks.csv"}
    write_text_atomic(paths["judge_agreement"], to_csv(agreeing, agreement.AGREEMENT_COLUMNS))
    write_text_atomic(paths["output_checks"], to_csv(checks, agreement.CHECK_COLUMNS))
    lm_eval_files = lm_eval_format.write(run_dir, scored, samples, settings, context)
    paths["lm_eval"] = run_dir / "lm_eval"
    paths["inspect_log"] = inspect_log.write(run_dir, scored, samples, context)
    disagreements = agreement.top_disagreements(scored, samples)
    paths["report"] = html_report.write(run_dir, rows, scored, samples, agreeing, disagreements, checks, context)
    return {name: path for name, path in paths.items() if name != "lm_eval" or lm_eval_files}
