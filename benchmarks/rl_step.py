"""Time FRPO and GRPO hardening steps side by side, same model, data and settings (demo_rl's: 4 prompts
x 4 completions x 24 tokens, LoRA r16, bf16 autocast), each sampling from the training policy, from
its bf16 sampling copy (`sampling_copy: true`) and, with `--samplers ... engine`, from the resident vLLM
engine with the policy's weights swapped in each step (`rollout_engine: true`; its start is in the first
step, which is not timed).

    python benchmarks/rl_step.py [--model smollm2-135m-instruct] [--steps 6] [--rounds 2] [--fp32]
    python benchmarks/rl_step.py --samplers copy engine --out benchmarks/results/rl_rollouts_<machine>.json

Runs the four settings alternately (rounds x each) so machine noise hits all alike, and prints the
median step time of each and the ratios. FRPO/GRPO is expected near 1.0: FRPO only swaps the
advantage function, whose cost is negligible next to sampling and the backward pass.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from frpo_bench.config import ModelConfig
from frpo_bench.defenses.frpo import FRPODefense
from frpo_bench.defenses.grpo import GRPODefense
from frpo_bench.defenses.rl_options import FRPOOptions, RLOptions
from frpo_bench.models.loading import materialize
from frpo_bench.typed import from_dict

SAMPLERS = {"policy": {}, "copy": {"sampling_copy": True}, "engine": {"rollout_engine": True}}


def options(cls, steps: int, bf16: bool = False, sampler: str = "policy"):
    return from_dict(cls, {"harmful_prompts": {"dataset": "demo_harmful", "split": "train", "n": 32},
                           "benign_prompts": {"dataset": "demo_benign", "split": "train", "n": 32},
                           "steps": steps, "prompts_per_step": 4, "num_generations": 4, "max_completion_length": 24,
                           "lora": {"r": 16, "alpha": 32}, "lr": 3e-4, "beta": 0.02, "bf16": bf16,
                           **SAMPLERS[sampler]})


def step_times(defense, opts, model, workdir: Path, seed: int) -> list[float]:
    out = workdir / f"{type(defense).__name__}-{seed}"
    defense.apply(model, out, opts, seed=seed, report=lambda m: None)
    history = json.loads((out / "train_log.json").read_text())["history"]
    return [h["step_time"] for h in history[1:]]  # the first step includes warm-up allocations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded name, tiny-llama, or a local dir")
    parser.add_argument("--steps", type=int, default=6, help="steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each setting")
    parser.add_argument("--fp32", action="store_true", help="train in fp32 instead of bf16 autocast")
    parser.add_argument("--samplers", nargs="+", default=["policy", "copy"], choices=list(SAMPLERS))
    parser.add_argument("--out", type=Path, default=None, help="also write the step times and the machine here")
    args = parser.parse_args()
    settings = {f"{name} {sampler}": (defense, cls, sampler) for sampler in args.samplers
                for name, defense, cls in (("grpo", GRPODefense, RLOptions), ("frpo", FRPODefense, FRPOOptions))}
    times: dict[str, list[float]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = materialize(ModelConfig(id=args.model), workdir / "model")
        for round_ in range(args.rounds):
            for name, (defense, cls, sampler) in settings.items():
                times[name] += step_times(defense(), options(cls, args.steps, not args.fp32, sampler), model, workdir,
                                          round_)
    median = {name: statistics.median(t) for name, t in times.items()}
    first = next(iter(times))
    print(f"model {args.model}: 4 prompts x 4 completions x 24 tokens per step, LoRA r16, "
          f"{'fp32' if args.fp32 else 'bf16 autocast'}, {len(times[first])} timed steps each")
    for name, value in median.items():
        print(f"  {name:12s} median step {value:.2f} s")
    for sampler in args.samplers:
        print(f"FRPO/GRPO ({sampler} sampling) = {median[f'frpo {sampler}'] / median[f'grpo {sampler}']:.3f}")
    baseline = args.samplers[0]
    for name in ("grpo", "frpo"):
        for sampler in args.samplers[1:]:
            print(f"{name}: a step sampling from the {sampler} takes "
                  f"{median[f'{name} {sampler}'] / median[f'{name} {baseline}']:.2f}x the {baseline}'s time")
    if args.out:
        from frpo_bench.files import write_json_atomic
        from frpo_bench.perf import machine_info
        write_json_atomic(args.out, {"machine": machine_info(), "model": args.model, "bf16": not args.fp32,
                                     "shape": "4 prompts x 4 completions x 24 tokens, LoRA r16",
                                     "median_step_s": median, "step_s": times})


if __name__ == "__main__":
    main()
