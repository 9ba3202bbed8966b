"""`dtype: auto`: bf16 on a GPU, on a CPU the faster of fp32/bf16 as measured once per machine (cached),
resolved by the engine before planning so that cache keys name the dtype that runs."""
import subprocess

import pytest

from frpo_bench.config import load_recipe
from frpo_bench.engine.plan import build_plan, resolve_installed
from frpo_bench.models import precision
from frpo_bench.models.precision import AUTO_ENV, resolve_dtype


def test_explicit_forced_and_gpu_resolutions(monkeypatch):
    monkeypatch.delenv(AUTO_ENV, raising=False)
    assert resolve_dtype("float32", "inference", "auto") == ("float32", "set in the recipe")
    assert resolve_dtype("auto", "training", "cuda:1")[0] == "bfloat16"
    monkeypatch.setenv(AUTO_ENV, "float32")
    assert resolve_dtype("auto", "inference", "cuda") == ("float32", f"{AUTO_ENV}=float32")


def test_a_forced_dtype_that_is_not_one_stops_the_run_before_compute(monkeypatch, capsys, tmp_path):
    from frpo_bench.cli import main
    monkeypatch.setenv(AUTO_ENV, "fp16")
    assert main(["run", "smoke", "--store", str(tmp_path / "s"), "--set", "generation.dtype=auto"]) == 2
    err = capsys.readouterr().err
    assert AUTO_ENV in err and "fp16" in err and "float32, bfloat16" in err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").glob("*/*/stage.json"))


def test_the_cpu_probe_runs_once_per_machine_and_picks_the_faster(monkeypatch, isolated_cache):
    monkeypatch.delenv(AUTO_ENV, raising=False)
    monkeypatch.setattr(precision, "gpu_visible", lambda: False)
    dtype, why = resolve_dtype("auto", "inference", "auto")
    measured = precision.cpu_probe()
    faster = measured["inference"]["bfloat16"] < precision.BF16_MARGIN * measured["inference"]["float32"]
    assert dtype == ("bfloat16" if faster else "float32") and "measured" in why
    assert precision.probe_path().is_file() and str(precision.probe_path()).startswith(str(isolated_cache))
    assert measured["machine"] == precision.machine_signature()

    def no_second_probe(*args, **kwargs):
        raise AssertionError("the probe ran again although its result is cached")
    monkeypatch.setattr(subprocess, "run", no_second_probe)
    assert resolve_dtype("auto", "training", "cpu")[0] in ("float32", "bfloat16")
    assert resolve_dtype("auto", "inference", "cpu")[0] == dtype


@pytest.mark.parametrize("forced", ["float32", "bfloat16"])
def test_the_engine_resolves_auto_before_planning_so_keys_name_the_dtype(forced, monkeypatch):
    monkeypatch.setenv(AUTO_ENV, forced)
    auto, _ = load_recipe("smoke", ["generation.dtype=auto", "evaluations.2.options.dtype=auto"])
    assert auto.generation.dtype == "auto"  # parsing does not look at the machine
    notes = resolve_installed(auto)
    assert notes["generation.dtype"].startswith(f"auto -> {forced}")
    assert notes["evaluations[2].options.dtype"].startswith(f"auto -> {forced}")
    pinned, _ = load_recipe("smoke", [f"generation.dtype={forced}", f"evaluations.2.options.dtype={forced}"])
    assert [s.key for s in build_plan(auto)[1]] == [s.key for s in build_plan(pinned)[1]]


def test_a_dtype_that_is_not_one_is_refused():
    from frpo_bench.errors import ConfigError
    with pytest.raises(ConfigError) as err:
        load_recipe("smoke", ["evaluations.2.options.dtype=fp8"])
    assert err.value.field == "evaluations[2].options.dtype"


@pytest.mark.parametrize("forced,bf16", [("float32", False), ("bfloat16", True)])
def test_training_bf16_auto_is_resolved_for_align_attacks_and_rl(forced, bf16, monkeypatch):
    monkeypatch.setenv(AUTO_ENV, forced)
    rl = ("defenses=[{name: frpo, options: {bf16: auto, harmful_prompts: {dataset: demo_harmful, split: train}, "
          "benign_prompts: {dataset: demo_benign, split: train}}}]")
    auto, _ = load_recipe("smoke", ["align.bf16=auto", "attacks.0.options.bf16=auto", rl])
    notes = resolve_installed(auto)
    assert auto.align.bf16 is bf16 and auto.attacks[0].options.bf16 is bf16 and auto.defenses[0].options.bf16 is bf16
    assert set(notes) == {"align.bf16", "attacks[0].options.bf16", "defenses[0].options.bf16"}
    pinned, _ = load_recipe("smoke", [f"align.bf16={str(bf16).lower()}", f"attacks.0.options.bf16={str(bf16).lower()}",
                                      rl.replace("bf16: auto", f"bf16: {str(bf16).lower()}")])
    assert [s.key for s in build_plan(auto)[1]] == [s.key for s in build_plan(pinned)[1]]


def test_bf16_takes_true_false_or_auto_only():
    from frpo_bench.errors import ConfigError
    with pytest.raises(ConfigError) as err:
        load_recipe("smoke", ["align.bf16=sometimes"])
    assert err.value.field == "align.bf16"
