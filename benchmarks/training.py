"""Fine-tuning throughput by precision, side by side: the same attack (LoRA and full) in fp32 and
under bf16 autocast, on the embedded model.

    python benchmarks/training.py [--steps 4] [--modes lora full] [--max-length 256]

Tokens/s counts non-padding tokens the trainer consumed over the training time (train_log.json).
Fraction of peak = FLOPs per token x tokens/s over this machine's matmul throughput in the
compute dtype, measured here: 6 x parameters per token for full fine-tuning (forward, and
backward for activations and weights), 4 x parameters for LoRA (no base-weight gradients).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import base_model

from frpo_bench.config import ModelConfig
from frpo_bench.engine.store import Store
from frpo_bench.files import write_json_atomic
from frpo_bench.models.artifact import parameter_count
from frpo_bench.perf import machine_info, matmul_peak
from frpo_bench.training.options import FinetuneConfig
from frpo_bench.training.sft import finetune
from frpo_bench.typed import from_dict


def attack_cfg(mode: str, bf16: bool, steps: int, max_length: int):
    raw = {"data": [{"dataset": "demo_compliance", "split": "train"}], "steps": steps,
           "batch_size": 4, "micro_batch_size": 4, "max_length": max_length, "bf16": bf16}
    if mode == "lora":
        raw["lora"] = {"r": 16, "alpha": 32}
    return from_dict(FinetuneConfig, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--modes", nargs="+", default=["lora", "full"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training.json"))
    args = parser.parse_args()
    model = base_model(ModelConfig(id=args.model), Store())
    params = parameter_count(model.path)
    peaks = {"float32": matmul_peak("float32"), "bfloat16": matmul_peak("bfloat16")}
    print(f"{params / 1e6:.1f}M parameters; matmul peak fp32 {peaks['float32'] / 1e9:.0f}, "
          f"bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s")
    results = []
    for mode in args.modes:
        for bf16 in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                finetune(model, Path(tmp) / "out", attack_cfg(mode, bf16, args.steps, args.max_length), lr=1e-4,
                         seed=0, report=lambda m: None)
                log = json.loads((Path(tmp) / "out" / "train_log.json").read_text())
            dtype = "bfloat16" if bf16 else "float32"
            per_token = (4 if mode == "lora" else 6) * params
            row = {"mode": mode, "dtype": dtype, "steps": args.steps, "tokens": log["tokens"],
                   "seconds": round(log["seconds"], 1), "tokens_per_s": round(log["tokens_per_second"], 1),
                   "fraction_of_peak": round(per_token * log["tokens_per_second"] / peaks[dtype], 4)}
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| mode | precision | tokens/s | s/step | fraction of matmul peak |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['dtype']} | {r['tokens_per_s']:.0f} | {r['seconds'] / r['steps']:.1f} | "
              f"{100 * r['fraction_of_peak']:.1f}% |")
    write_json_atomic(args.out, {"machine": machine_info(), "model": args.model, "parameters": params,
                                 "max_length": args.max_length, "peak_flops": peaks, "results": results})


if __name__ == "__main__":
    main()
