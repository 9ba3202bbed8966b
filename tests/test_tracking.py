"""`report_to`: trackers named in the recipe get every Trainer stage's logs and the final leaderboard;
checked offline with TensorBoard's event files. A tracker that is unknown or not installed stops the
run before compute."""
import pytest

from frpo_bench.errors import ConfigError


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    files = list(folder.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event files under {folder}"
    tags = set()
    for path in files:
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.mark.slow
def test_tensorboard_gets_training_logs_and_the_leaderboard(tmp_path):
    from frpo_bench.cli import main
    out, store = tmp_path / "run", tmp_path / "store"
    assert main(["run", "smoke", "--out", str(out), "--store", str(store), "--set", "report_to=[tensorboard]"]) == 0
    board = _events(out / "tracking")
    assert "harmful_refusal/aligned/none/harmful_lora/0.001/mean" in board
    for kind in ("align", "attack"):  # every Trainer stage logged its loss into its own artifact
        stage_dirs = [d for d in (store / kind).iterdir() if d.is_dir()]
        assert stage_dirs and all("train/loss" in _events(d / "tracking") for d in stage_dirs), kind


def test_unknown_or_missing_trackers_fail_before_compute(monkeypatch):
    import importlib.util

    from frpo_bench.training.tracking import check_trackers
    with pytest.raises(ConfigError, match="is not a tracker"):
        check_trackers(["tensorbord"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="needs the wandb package"):
        check_trackers(["wandb"])
