"""Time FRPO and GRPO hardening steps side by side, same model, data and settings (demo_rl's: 4 prompts
x 4 completions x 24 tokens, LoRA r16, bf16 autocast), each sampling from the training policy and from
its bf16 sampling copy (`sampling_copy: true`).

    python benchmarks/rl_step.py [--model smollm2-135m-instruct] [--steps 6] [--rounds 2] [--fp32]

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


def options(cls, steps: int, bf16: bool = False, sampling_copy: bool = False):
    return from_dict(cls, {"harmful_prompts": {"dataset": "demo_harmful", "split": "train", "n": 32},
                           "benign_prompts": {"dataset": "demo_benign", "split": "train", "n": 32},
                           "steps": steps, "prompts_per_step": 4, "num_generations": 4, "max_completion_length": 24,
                           "lora": {"r": 16, "alpha": 32}, "lr": 3e-4, "beta": 0.02, "bf16": bf16,
                           "sampling_copy": sampling_copy})


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
    args = parser.parse_args()
    settings = {f"{name} {'copy' if copy else 'policy'}": (defense, cls, copy)
                for copy in (False, True) for name, defense, cls in (("grpo", GRPODefense, RLOptions),
                                                                    ("frpo", FRPODefense, FRPOOptions))}
    times: dict[str, list[float]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = materialize(ModelConfig(id=args.model), workdir / "model")
        for round_ in range(args.rounds):
            for name, (defense, cls, copy) in settings.items():
                times[name] += step_times(defense(), options(cls, args.steps, not args.fp32, copy), model, workdir,
                                          round_)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"model {args.model}: 4 prompts x 4 completions x 24 tokens per step, LoRA r16, "
          f"{'fp32' if args.fp32 else 'bf16 autocast'}, {len(times['grpo policy'])} timed steps each")
    for name, value in median.items():
        print(f"  {name:12s} median step {value:.2f} s")
    for sampler in ("policy", "copy"):
        print(f"FRPO/GRPO ({sampler} sampling) = {median[f'frpo {sampler}'] / median[f'grpo {sampler}']:.3f}")
    for name in ("grpo", "frpo"):
        print(f"{name}: sampling from the copy is {median[f'{name} policy'] / median[f'{name} copy']:.2f}x faster a step")


if __name__ == "__main__":
    main()
