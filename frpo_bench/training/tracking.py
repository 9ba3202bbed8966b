"""Experiment trackers (`report_to` in a recipe): the training stages' Trainer and TRL logs, and the
run's final leaderboard, go to wandb, tensorboard, trackio or mlflow as the user asks (none by default).

Which trackers a training stage reports to is set for the time it runs (`reporting`), like its
device: the Trainer and GRPO settings read it, and TensorBoard event files go to the stage's own
artifact (`tracking/`), so they stay with the weights they describe. Never part of a cache key.
"""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path

from frpo_bench.errors import ConfigError

TRACKERS = {"wandb": "wandb", "tensorboard": "tensorboard", "trackio": "trackio", "mlflow": "mlflow"}  # name -> module
FOLDER = "tracking"
_active: dict[str, list[str]] = {"report_to": []}


def check_trackers(names: list[str], field: str = "report_to") -> None:
    """Known names, and their packages installed: known before any compute."""
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(field, name, "is not a tracker", f"use some of {', '.join(TRACKERS)} (or leave it empty)")
        module = TRACKERS[name]
        if importlib.util.find_spec(module) is None and not (name == "tensorboard" and importlib.util.find_spec("tensorboardX")):
            hint = "pip install -e '.[tracking]' (make setup installs it)" if name == "tensorboard" else f"pip install {module}"
            raise ConfigError(field, name, f"needs the {module} package, which is not installed", hint)


def report_to() -> list[str]:
    """The trackers the running stage reports to (a Trainer's `report_to`)."""
    return list(_active["report_to"])


@contextmanager
def reporting(names: list[str], out: Path):
    """Trackers on for one training stage; TensorBoard's event files under out/tracking."""
    before = _active["report_to"], os.environ.get("TENSORBOARD_LOGGING_DIR")
    _active["report_to"] = list(names)
    if "tensorboard" in names:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / FOLDER)
    try:
        yield
    finally:
        _active["report_to"] = before[0]
        if before[1] is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = before[1]


def log_leaderboard(names: list[str], run_dir: Path, rows: list[dict], run_name: str) -> list[str]:
    """The final leaderboard's means and interval bounds as scalars `metric/cell/{mean,ci95_low,ci95_high}`
    (plus the CSV as an artifact where the tracker keeps files). Returns what was logged where."""
    scalars = {}
    for r in rows:
        cell = "/".join(str(r[k]) or "-" for k in ("base", "defense", "attack", "attack_lr"))
        for field in ("mean", "ci95_low", "ci95_high"):
            scalars[f"{r['metric']}/{cell}/{field}"] = float(r[field])
    done = []
    for name in names:
        done.append(globals()[f"_log_{name}"](run_dir, scalars, run_name))
    return done


def _log_tensorboard(run_dir: Path, scalars: dict, run_name: str) -> str:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from tensorboardX import SummaryWriter
    folder = run_dir / FOLDER
    writer = SummaryWriter(log_dir=str(folder))
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, 0)
    writer.close()
    return f"tensorboard: {folder}"


def _log_wandb(run_dir: Path, scalars: dict, run_name: str) -> str:
    import wandb
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "frpo-bench"), name=run_name, dir=str(run_dir))
    run.log(scalars)
    run.save(str(run_dir / "leaderboard.csv"), base_path=str(run_dir))
    run.finish()
    return f"wandb: {run.url or run.id}"


def _log_trackio(run_dir: Path, scalars: dict, run_name: str) -> str:
    import trackio
    trackio.init(project=os.environ.get("TRACKIO_PROJECT", "frpo-bench"), name=run_name)
    trackio.log(scalars)
    trackio.finish()
    return "trackio: logged"


def _log_mlflow(run_dir: Path, scalars: dict, run_name: str) -> str:
    import mlflow
    clean = {k.replace(":", "_").replace("|", "_"): v for k, v in scalars.items() if v == v}  # mlflow: no NaN, fewer chars
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_metrics(clean)
        mlflow.log_artifact(str(run_dir / "leaderboard.csv"))
    return f"mlflow: run {run.info.run_id}"
