"""Time FRPO and GRPO hardening steps side by side, same model, data and settings.

    python benchmarks/rl_step.py [--model smollm2-135m-instruct] [--steps 6] [--rounds 2]

Runs GRPO and FRPO alternately (rounds x each) so machine noise hits both alike, and prints
the median step time of each and their ratio. Expected near 1.0: FRPO only swaps the
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


def options(cls, steps: int):
    return from_dict(cls, {"harmful_prompts": {"dataset": "demo_harmful", "split": "train", "n": 32},
                           "benign_prompts": {"dataset": "demo_benign", "split": "train", "n": 32},
                           "steps": steps, "prompts_per_step": 4, "num_generations": 4, "max_completion_length": 32,
                           "lora": {"r": 16, "alpha": 32}, "lr": 1e-4, "beta": 0.02})


def step_times(defense, opts, model, workdir: Path, seed: int) -> list[float]:
    out = workdir / f"{type(defense).__name__}-{seed}"
    defense.apply(model, out, opts, seed=seed, report=lambda m: None)
    history = json.loads((out / "train_log.json").read_text())["history"]
    return [h["step_time"] for h in history[1:]]  # the first step includes warm-up allocations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded name, tiny-llama, or a local dir")
    parser.add_argument("--steps", type=int, default=6, help="steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating GRPO/FRPO runs of each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = materialize(ModelConfig(id=args.model), workdir / "model")
        times = {"grpo": [], "frpo": []}
        for round_ in range(args.rounds):
            times["grpo"] += step_times(GRPODefense(), options(RLOptions, args.steps), model, workdir, round_)
            times["frpo"] += step_times(FRPODefense(), options(FRPOOptions, args.steps), model, workdir, round_)
    grpo, frpo = statistics.median(times["grpo"]), statistics.median(times["frpo"])
    print(f"model {args.model}: 4 prompts x 4 completions x 32 tokens per step, LoRA r16, fp32, {len(times['grpo'])} "
          "timed steps each")
    print(f"GRPO median step {grpo:.2f} s   FRPO median step {frpo:.2f} s   FRPO/GRPO = {frpo / grpo:.3f}")


if __name__ == "__main__":
    main()
