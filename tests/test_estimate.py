"""The cost model behind `plan --estimate` reproduces the figures it was calibrated on within 25%, and
`plan paper --estimate` prints hours, GPU-hours and peak memory per sort of stage."""
import dataclasses
import json
import math
from pathlib import Path

import pytest

from frpo_bench.engine.estimate import (
    MACHINES,
    Machine,
    generate_seconds,
    model_parameters,
    price,
    train_peak_bytes,
    train_seconds,
)

SMOL, MISTRAL = model_parameters("smollm2-135m-instruct"), model_parameters("mistralai/Mistral-7B-Instruct-v0.1")
H200, CPU = MACHINES["h200"], MACHINES["cpu"]


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def within(estimate: float, measured: float, share: float = 0.25) -> bool:
    return abs(estimate - measured) <= share * measured


def result(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def gpu_figures() -> list[tuple]:
    """benchmarks/results/gpu_check_h200.json (benchmarks/gpu_check.py on one H200)."""
    g = result("gpu_check_h200.json")
    return [
        # the harness's HF generation, SmolLM2 already resident: 64 prompts x 64 tokens in batches of 16
        ("h200 smollm2 harness generation s", lambda: generate_seconds(SMOL, 64, 64, 16, H200),
         g["generation"]["harness_hf_s"]),
        # Mistral-7B-shaped: one RL step's sampling, 128 sequences x 256 tokens in one batch
        ("h200 7b sampling s", lambda: generate_seconds(MISTRAL, 128, 256, 128, H200),
         g["paper_scale"]["7b_sampling_128x256_s"]),
        # LoRA r64 forward+backward over 128 x 352 tokens, one optimizer step, gradient checkpointing
        ("h200 7b lora step s", lambda: train_seconds(MISTRAL, 128 * 352, 1, H200, True, lora=True),
         g["paper_scale"]["7b_lora_step_s"]),
        ("h200 7b lora peak GiB", lambda: train_peak_bytes(MISTRAL, 16 * 352, full=False) / 2 ** 30,
         g["paper_scale"]["7b_lora_peak_gib"]),
    ]


def cpu_machine(data: dict) -> Machine:
    """The machine a CPU result was measured on, by the matmul peaks it measured itself."""
    return dataclasses.replace(CPU, name="measured", bf16_flops=data["peak_flops"]["bfloat16"],
                               fp32_flops=data["peak_flops"]["float32"])


def fit_script():
    """benchmarks/fit_cost_model.py, the fit of the CPU constants to the committed measurements."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("fit_cost_model", RESULTS.parent / "fit_cost_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,estimate,measured", gpu_figures(), ids=[f[0] for f in gpu_figures()])
def test_gpu_calibration_figures_are_reproduced(name, estimate, measured):
    """The targets are the committed measurements themselves: a new result moves the model or fails here."""
    assert within(estimate(), measured), (name, estimate(), measured)


def test_cpu_constants_are_the_fit_of_every_committed_cpu_measurement(monkeypatch):
    """Refit from the committed results: the constants in estimate.py must be the fit's (a new measurement moves
    them or fails here), and after it every measurement (generation, training, each demo stage kind on each
    machine) is within 1.6x of the model on its machine's own peaks."""
    fit = fit_script()
    observations = fit.observations()
    constants = fit.current()
    refit = fit.fit(observations, constants)
    for (name, key), have, want in zip(fit.FITTED, constants, refit):
        assert abs(have - want) <= 0.01 * want, (name, key, have, want)  # paste `python benchmarks/fit_cost_model.py`
    errors = fit.log_errors(observations, constants)
    worst = max(range(len(errors)), key=lambda i: abs(errors[i]))
    assert abs(errors[worst]) <= math.log(1.6), (observations[worst][0], math.exp(errors[worst]))
    assert fit.PRIOR != constants  # the data moved them: the fit is not its prior handed back
    recorded = result("cost_model_fit.json")["constants"]  # the committed table docs/performance.md cites is this fit's
    names = [f"{name}[{key}]" if key else name for name, key in fit.FITTED]
    assert [recorded[n]["after"] for n in names] == pytest.approx(constants, rel=0.01)


def test_every_kind_of_figure_has_a_committed_measurement():
    names = " ".join(o[0] for o in fit_script().observations())
    for kind in ("hf float32", "hf bfloat16", "lora float32", "lora bfloat16", "full float32", "full bfloat16",
                 "alone.json attack", "alone.json generate", "alone.json score"):
        assert kind in names, kind


def test_a_paper_frpo_hardening_takes_hours_and_fits_one_80gb_card():
    options = {"prompts_per_step": 16, "num_generations": 8, "max_completion_length": 256, "steps": 500,
               "beta": 0.1, "lora": {"r": 64}, "helpfulness_reward": "helpful_proxy",
               "harmful_prompts": {"dataset": "demo_harmful", "split": "train"},
               "benign_prompts": {"dataset": "demo_benign", "split": "train"}}
    from frpo_bench.defenses.rl_options import RLOptions, rl_work
    from frpo_bench.typed import from_dict
    estimate = price("harden", rl_work(from_dict(RLOptions, options)), MISTRAL, H200)
    probe = result("gpu_check_h200.json")["paper_scale"]  # one step's sampling and update, measured on an H200
    measured_steps = 500 * (probe["7b_sampling_128x256_s"] + probe["7b_lora_step_s"])
    assert measured_steps <= estimate.seconds <= 1.5 * measured_steps  # + loading and the reference's forwards
    assert estimate.seconds > 3600  # hours, not minutes
    assert estimate.peak_bytes < MACHINES["h100"].memory_bytes


def test_plan_paper_estimate_prints_gpu_hours_and_peak_memory(paper_plan, capsys):
    """What `plan paper --estimate --gpu h100` prints after its plan (the session's paper plan: one build); the
    flags' wiring through the CLI on smoke."""
    from frpo_bench.cli import main
    from frpo_bench.engine.estimate import estimate_report
    out = estimate_report(paper_plan[1], "mistralai/Mistral-7B-Instruct-v0.1", "h100")
    assert "estimate for 25731 stages of a 7.24B-parameter model on one h100" in out  # trajectories, XSTest, families,
    # field defenses, and the reference's own evaluation during attacks (HarmBench re-drawn per step, MATH-500, MBPP+)
    for row in ("harden frpo", "harden tar", "attack full", "checkpoint", "score kl_to_start", "score gsm8k",
                "score math500", "score evalplus", "score harmbench_reference", "score response_loss", "total"):
        assert row in out
    assert "GPU-hours" in out and "peak GiB" in out
    assert "NO (> 80 GiB)" in out  # full-weight 7B training needs more than one 80 GB card
    assert main(["plan", "smoke", "--estimate", "--gpu", "h200"]) == 0
    assert "stages of a 0.00B-parameter model on one h200" in capsys.readouterr().out


def test_plan_help_states_the_cost_models_assumptions(capsys):
    from frpo_bench.cli import main
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    out = capsys.readouterr().out
    assert "6 N FLOPs per token" in out and "Calibration" in out


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_in_its_quick_mode(tmp_path):
    """benchmarks/gpu_check.py is meant for a GPU; --quick runs every step small on whatever device is here
    (the assertions read 'on this device'), so the script itself is kept working."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["smoke"]["stages"] == result["smoke"]["on_device"] == 24
    assert result["rl_step"]["timed_steps_each"] >= 1 and result["rl_step"]["frpo_over_grpo"] > 0
    assert result["generation"]["speedup"] > 0 and result["judge"]["judge_prompts_per_s"] > 0
    assert result["generation"]["plain_generate_s"] > 0 and result["generation"]["harness_over_plain"] > 0
    assert result["machine"]["cores"] >= 1 and result["machine"]["versions"]["torch"]


def test_the_first_eta_of_the_demo_is_within_1_5x_of_its_measured_stages(monkeypatch):
    """The ETA a run prints on an empty store is the cost model on this machine's measured peaks; against each
    committed demo run that recorded its machine's peaks, it must land within 1.5x of the stages' own seconds."""
    from frpo_bench.config import load_recipe
    from frpo_bench.engine.estimate import stage_estimate
    from frpo_bench.engine.plan import build_plan, resolve_installed
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("demo_stages*.json"))]
    runs = [r for r in runs if "peak_flops" in r.get("machine", {}) and not r.get("contended")]  # alone only
    assert runs, "no committed demo run with its machine's peaks"
    for run in runs:
        monkeypatch.setenv("FRPO_BENCH_AUTO_DTYPE", run["resolved"]["dtype"])
        monkeypatch.setenv("FRPO_BENCH_AUTO_ATTENTION", run["resolved"]["attention"])
        recipe = load_recipe(run["recipe"], ["generation.backend=hf"])[0]
        resolve_installed(recipe)
        stages = build_plan(recipe)[1]
        machine = cpu_machine({"peak_flops": run["machine"]["peak_flops"]})
        eta = sum(stage_estimate(s, SMOL, machine).seconds for s in stages)
        measured = run["seconds_by_kind"]["hf"]["stages_total_s"]
        assert measured / 1.5 <= eta <= 1.5 * measured, (eta, measured)


def test_stage_flops_are_their_definition():
    """The compute floor counts 4 N (LoRA) or 6 N (full) FLOPs per trained token and 2 N per generated or read one."""
    from frpo_bench.config import load_recipe
    from frpo_bench.engine.estimate import stage_flops
    from frpo_bench.engine.plan import build_plan
    from frpo_bench.work import PROMPT_TOKENS, SEQUENCE_FILL
    stages = build_plan(load_recipe("smoke")[0])[1]
    lora = next(s for s in stages if s.kind == "attack" and s.fields.get("lora"))
    full = next(s for s in stages if s.kind == "attack" and not s.fields.get("lora"))
    gen = next(s for s in stages if s.kind == "generate")
    tokens = lambda s: s.fields["steps"] * s.fields["batch_size"] * s.fields["max_length"] * SEQUENCE_FILL  # noqa: E731
    assert stage_flops(lora, 1e6) == (4e6 * tokens(lora), "float32")
    assert stage_flops(full, 1e6) == (6e6 * tokens(full), "float32")
    n, new = gen.fields["prompts"]["n"], gen.fields["generation"]["max_new_tokens"]
    assert stage_flops(gen, 1e6) == (2e6 * n * (PROMPT_TOKENS + new), "float32")
    assert stage_flops(next(s for s in stages if s.kind == "base"), 1e6) == (0.0, "float32")
