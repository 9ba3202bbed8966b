"""Fit the cost model's CPU constants (frpo_bench/engine/estimate.py) to the committed measurements.

Observations, each on the machine that measured it (its own matmul peaks): every HF row of
benchmarks/results/generation*.json, every row of training*.json, and every stage kind of each demo_stages*.json
run that recorded its peaks and ran alone (attention_kernels*.json, one shape under several attention kernels the
model does not price, is not an observation; nor is resident_engine*.json: the grouped kernel and vLLM's resident
engine, neither priced). The fit is least squares on log(estimate / measured), in log-parameter
space (Levenberg-Marquardt with a numerical Jacobian), with a weak pull towards fixed prior values (PRIOR)
so that a constant the data barely sees stays near it. The GPU constants are not refitted here: gpu_check_h200.json is their only
measurement and tests/test_estimate.py checks them directly.

    python benchmarks/fit_cost_model.py            # per observation, the hand-set constants' miss and the fit's
    python benchmarks/fit_cost_model.py --write    # also write benchmarks/results/cost_model_fit.json

tests/test_estimate.py runs the same fit and fails when the constants in estimate.py are not its result, so a new
measurement under benchmarks/results moves the model (paste the printed constants) or fails the test.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from frpo_bench.engine import estimate

RESULTS = Path(__file__).resolve().parent / "results"

# (module constant, key in it or None): the CPU constants the committed CPU measurements can see
FITTED = [("TRAIN_MFU", "float32"), ("TRAIN_MFU", "bfloat16"), ("TRAIN_STEP_OVERHEAD", "cpu"),
          ("CPU_DECODE_STEP", None), ("CPU_DECODE_MFU", "float32"), ("CPU_DECODE_MFU", "bfloat16"),
          ("LOAD_FIXED", "cpu"), ("FORWARD_MFU", "cpu"), ("LM_EVAL_START", None)]
# Where each constant is pulled to, weakly, so that one the data barely sees stays put: the values set by hand
# before any fit (fixed here so that the fit does not depend on the constants it replaces)
PRIOR = [0.44, 0.55, 0.2, 0.064, 0.193, 0.65, 1.0, 0.9, 2.0]
PRIOR_WEIGHT = 0.1  # residual per unit of log-change of a constant: weak next to a factor-of-e miss (1.0)


def current() -> list[float]:
    return [getattr(estimate, name) if key is None else getattr(estimate, name)[key] for name, key in FITTED]


@contextlib.contextmanager
def constants(values: list[float]):
    """The cost model with `values` in place of the FITTED constants, restored on exit."""
    saved = {name: getattr(estimate, name) for name, _ in FITTED}
    try:
        for (name, key), value in zip(FITTED, values):
            if key is None:
                setattr(estimate, name, value)
            else:
                setattr(estimate, name, {**getattr(estimate, name), key: value})
        yield
    finally:
        for name, value in saved.items():
            setattr(estimate, name, value)


def machine(peaks: dict) -> estimate.Machine:
    nan = float("nan")  # a dtype the benchmark did not measure: any estimate that reads it is NaN, not a guess
    return dataclasses.replace(estimate.MACHINES["cpu"], name="measured", bf16_flops=peaks.get("bfloat16", nan),
                               fp32_flops=peaks.get("float32", nan))


def micro_benchmarks(results: Path) -> list[tuple]:
    """(name, estimate in seconds, measured seconds) of the generation and training benchmarks."""
    rows = []
    for path in sorted(results.glob("generation*.json")):
        data = json.loads(path.read_text())
        for r in (r for r in data["results"] if r["backend"] == "hf"):
            rows.append((f"{path.name} hf {r['dtype']}",
                         lambda d=data, r=r: estimate.generate_seconds(d["parameters"], d["prompts"], d["max_new_tokens"],
                                                                       d["batch_size"], machine(d["peak_flops"]),
                                                                       r["dtype"]),
                         r["seconds"]))
    for path in sorted(results.glob("training*.json")):
        data = json.loads(path.read_text())
        for r in data["results"]:
            rows.append((f"{path.name} {r['mode']} {r['dtype']}",
                         lambda d=data, r=r: estimate.train_seconds(d["parameters"], r["tokens"], r["steps"],
                                                                    machine(d["peak_flops"]), r["dtype"] == "bfloat16",
                                                                    lora=r["mode"] == "lora"),
                         r["seconds"]))
    return rows


def demo_runs(results: Path) -> list[dict]:
    """The committed demo runs a first ETA can be checked against: alone, with their machine's peaks."""
    runs = [json.loads(p.read_text()) | {"file": p.name} for p in sorted(results.glob("demo_stages*.json"))]
    return [r for r in runs if "peak_flops" in r.get("machine", {}) and not r.get("contended")]


def demo_stages(run: dict) -> list:
    """The plan `run` executed, resolved as it was (its dtype and attention), with the HF backend."""
    from frpo_bench.config import load_recipe
    from frpo_bench.engine.plan import build_plan, resolve_installed
    saved = {k: os.environ.get(k) for k in ("FRPO_BENCH_AUTO_DTYPE", "FRPO_BENCH_AUTO_ATTENTION")}
    os.environ["FRPO_BENCH_AUTO_DTYPE"] = run["resolved"]["dtype"]
    os.environ["FRPO_BENCH_AUTO_ATTENTION"] = run["resolved"]["attention"]
    try:
        recipe = load_recipe(run["recipe"], ["generation.backend=hf"])[0]
        with contextlib.redirect_stderr(io.StringIO()):  # what auto resolved to: known already
            resolve_installed(recipe)
        return build_plan(recipe)[1]
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


DEMO_KINDS = ("base", "align", "attack", "generate", "score")


def demo_kinds(results: Path) -> list[tuple]:
    """(name, estimate, measured) per stage kind of each committed demo run."""
    params = estimate.model_parameters("smollm2-135m-instruct")
    rows = []
    for run in demo_runs(results):
        stages, peaks = demo_stages(run), machine(run["machine"]["peak_flops"])
        for kind in DEMO_KINDS:
            rows.append((f"{run['file']} {kind}",
                         lambda s=stages, k=kind, m=peaks: sum(estimate.stage_estimate(x, params, m).seconds
                                                               for x in s if x.kind == k),
                         run["seconds_by_kind"]["hf"][kind]))
    return rows


def observations(results: Path = RESULTS) -> list[tuple]:
    return micro_benchmarks(results) + demo_kinds(results)


def log_errors(obs: list[tuple], values: list[float]) -> np.ndarray:
    with constants(values):
        return np.array([math.log(predict() / measured) for _, predict, measured in obs])


def fit(obs: list[tuple], start: list[float], iterations: int = 60) -> list[float]:
    """Levenberg-Marquardt on log(estimate / measured) over log-constants from `start`, with the pull to PRIOR."""
    anchor, x = np.log(PRIOR), np.log(start)

    def residuals(z):
        return np.concatenate([log_errors(obs, list(np.exp(z))), PRIOR_WEIGHT * (z - anchor)])

    damping, r = 1e-2, residuals(x)
    for _ in range(iterations):
        jac = np.stack([(residuals(x + h) - r) / 1e-5 for h in np.eye(len(x)) * 1e-5], axis=1)
        step = np.linalg.solve(jac.T @ jac + damping * np.eye(len(x)), -jac.T @ r)
        trial = residuals(x + step)
        if trial @ trial < r @ r:
            x, r, damping = x + step, trial, damping / 3
            if np.abs(step).max() < 1e-6:
                break
        else:
            damping *= 10
    return list(np.exp(x))


def rounded(values: list[float]) -> list[float]:
    return [float(f"{v:.3g}") for v in values]


def report(obs: list[tuple], before: list[float], after: list[float]) -> dict:
    errors_before, errors_after = log_errors(obs, before), log_errors(obs, after)
    return {
        "constants": {f"{n}[{k}]" if k else n: {"before": b, "after": a}
                      for (n, k), b, a in zip(FITTED, before, after)},
        "observations": [{"name": name, "measured_s": measured, "estimate_over_measured_before": round(math.exp(eb), 3),
                          "estimate_over_measured_after": round(math.exp(ea), 3)}
                         for (name, _, measured), eb, ea in zip(obs, errors_before, errors_after)],
        "worst_factor_after": round(math.exp(np.abs(errors_after).max()), 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/cost_model_fit.json")
    args = parser.parse_args(argv)
    obs = observations()
    after = rounded(fit(obs, current()))
    result = report(obs, PRIOR, after)  # before: the hand-set values the fit starts from and is pulled to
    for row in result["observations"]:
        print(f"{row['name']:55s} measured {row['measured_s']:8.1f} s  estimate/measured "
              f"{row['estimate_over_measured_before']:5.2f} -> {row['estimate_over_measured_after']:5.2f}")
    for name, pair in result["constants"].items():
        print(f"{name:28s} {pair['before']:<10g} -> {pair['after']:g}")
    print(f"worst factor after the fit: {result['worst_factor_after']}")
    if args.write:
        from frpo_bench.files import write_json_atomic
        write_json_atomic(RESULTS / "cost_model_fit.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
