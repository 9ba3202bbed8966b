"""ETA from the store's own history: a stage is expected to take what stages of its sort took on this
device per unit of size, times its size; priors only where the store has no record."""
import json

from frpo_bench.config import load_recipe
from frpo_bench.engine.eta import History, expected_seconds
from frpo_bench.engine.plan import build_plan
from frpo_bench.engine.runner import Progress
from frpo_bench.engine.stages import prior_seconds, stage_size
from frpo_bench.engine.store import Store


def smoke_stages(*overrides):
    return build_plan(load_recipe("smoke", list(overrides))[0])[1]


def record(store: Store, stage, seconds: float, device: str = "cpu") -> None:
    with store.building(stage.kind, stage.key, {"label": stage.label, "fields": stage.fields, "parents": [],
                                                "seconds": seconds, "device": device,
                                                "size": stage_size(stage)}):
        pass


def test_estimates_come_from_measured_seconds_scaled_by_size(tmp_path):
    store = Store(tmp_path)
    stages = smoke_stages()
    for stage in stages:
        record(store, stage, 100.0)
    history = History.of_store(store.root)
    progress = Progress(stages, history=history, device="cpu", quiet=True)
    assert all(abs(progress.estimate(s) - 100.0) < 1e-6 for s in stages)
    longer = [s for s in smoke_stages("attacks.0.options.steps=6") if s.kind == "attack" and "harmful" in s.label]
    assert abs(expected_seconds(longer[0], history, "cpu") - 200.0) < 1e-6  # twice the steps: twice the time
    more = [s for s in smoke_stages("generation.max_new_tokens=16") if s.kind == "generate"]
    assert abs(expected_seconds(more[0], history, "cpu") - 200.0) < 1e-6  # twice the new tokens


def test_other_devices_and_empty_stores_fall_back_to_the_priors(tmp_path):
    store = Store(tmp_path)
    stages = smoke_stages()
    for stage in stages:
        record(store, stage, 100.0, device="cuda:0")
    history = History.of_store(store.root)
    assert all(expected_seconds(s, history, "cpu") == prior_seconds(s) for s in stages)
    assert all(expected_seconds(s, History.of_store(tmp_path / "empty"), "cpu") == prior_seconds(s) for s in stages)


def test_records_written_before_devices_were_recorded_are_ignored(tmp_path):
    store = Store(tmp_path)
    stage = smoke_stages()[0]
    with store.building(stage.kind, stage.key, {"label": stage.label, "fields": stage.fields, "parents": [],
                                                "seconds": 5.0}):
        pass
    assert History.of_store(store.root).estimate(stage, "cpu") is None
    assert json.loads((store.path(stage.kind, stage.key) / "stage.json").read_text())["seconds"] == 5.0


def test_an_attack_that_does_not_train_is_its_own_sort(tmp_path):
    """A refusal-direction ablation has no steps (size 1): had it joined the full fine-tuning attacks' sort, its
    seconds per unit would have priced a fine-tuning attack at ~10^5 times its cost (a demo_attacks run's ETA once
    read 58,980 minutes)."""
    ablate = ("{name: ablate, type: refusal_ablation, options: {harmful: {dataset: demo_harmful, split: train, n: 8}, "
              "harmless: {dataset: demo_benign, split: train, n: 8}, harmful_val: {dataset: demo_harmful, split: eval, "
              "n: 4}, harmless_val: {dataset: demo_benign, split: eval, n: 4}}}")
    full = "{name: full, lrs: [1.0e-4], options: {data: [{dataset: demo_compliance, split: train}], steps: 3}}"
    stages = smoke_stages(f"attacks=[{ablate}, {full}]")
    store = Store(tmp_path)
    by_name = {s.label.split(" / ")[1].split(" ")[0]: s for s in stages if s.kind == "attack"}
    record(store, by_name["ablate"], 120.0)
    record(store, by_name["full"], 30.0)
    history = History.of_store(store.root)
    assert abs(expected_seconds(by_name["full"], history, "cpu") - 30.0) < 1e-6
    assert abs(expected_seconds(by_name["ablate"], history, "cpu") - 120.0) < 1e-6


def test_a_stop_whose_raise_was_swallowed_stops_the_run_at_the_next_stage(tmp_path):
    """A signal's KeyboardInterrupt raised inside a finalizer or a library's catch-all is lost; the run must still
    stop before it builds anything more."""
    import os
    import signal

    import pytest

    from frpo_bench.cli import install_stop_handlers, restore_stop_handlers
    from frpo_bench.engine.runner import execute
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as under a foreground shell
    try:
        previous = install_stop_handlers()
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # swallowed, as a finalizer would
        with pytest.raises(KeyboardInterrupt):
            execute(smoke_stages(), Store(tmp_path))
        assert not [p for p in tmp_path.glob("*/*") if p.is_dir()]  # nothing was built
        restore_stop_handlers(previous)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        execute([], Store(tmp_path))  # the stop was handled: the next run is not stopped by it
    finally:
        signal.signal(signal.SIGINT, outer)


def test_a_stop_signal_inherited_as_ignored_stays_ignored():
    """A shell's background job starts with SIGINT ignored; the CLI keeps that, as Python does (a fresh-clone
    `make test &` once saw the Ctrl-C test's run finish with exit 0 for this reason)."""
    import signal

    from frpo_bench.cli import install_stop_handlers, restore_stop_handlers
    outer = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        previous = install_stop_handlers()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # SIGTERM, not ignored, is handled
        restore_stop_handlers(previous)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, outer)
