"""Generation of several attacked cells of one base, side by side in one run: what each cell costs with

  hf            the harness's HF backend (the model loaded per cell; `--attention`, default grouped)
  vllm-restart  a vLLM engine started per weight set (full-weight cells before the resident engine; LoRA cells
                served as adapters on a base engine, as `vllm_adapters: served` still does)
  vllm-resident one vLLM engine for the base; each cell's weights swapped into it, LoRA cells merged first
                (`vllm_adapters: merged`)
  vllm-compiled the same, the engine compiled (`vllm_enforce_eager: false`: a longer start, paid once)

    python benchmarks/resident_engine.py [--full 2] [--lora 1] [--dtype bfloat16]
                                         [--out benchmarks/results/resident_engine_<machine>.json]

The cells are the base and weight sets of its shape made here: full-weight variants (every weight moved by a
seeded 1% noise) and LoRA adapters (rank 16 on every projection, seeded non-zero B), so each cell's text differs.
Shapes are the demo's: 100 prompts x 32 new tokens, HF batch 48. Per mode: seconds in all (engine starts
included), per cell, engine starts, seconds swapping, steady tokens/s over generation time alone, and its fraction
of this machine's matmul peak in the dtype. `same_text_as_restart` counts completions equal to the restarted
engine's for the same cell: a swapped-in checkpoint must give what a fresh engine on it gives.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import base_model

from frpo_bench.config import GenerationConfig, ModelConfig
from frpo_bench.data import load_rows
from frpo_bench.engine.store import Store
from frpo_bench.files import default_cache_dir, write_json_atomic
from frpo_bench.models import ModelRef
from frpo_bench.models.artifact import parameter_count
from frpo_bench.perf import machine_info, matmul_peak
from frpo_bench.typed import from_dict


def full_variant(base: ModelRef, out: Path, seed: int) -> ModelRef:
    """The base's checkpoint with every weight moved by seeded noise of 1% of its own scale."""
    if not (out / "model.safetensors").is_file():
        import shutil

        import torch
        from safetensors.torch import load_file, save_file
        shutil.copytree(base.path, out, dirs_exist_ok=True)
        generator = torch.Generator().manual_seed(seed)
        tensors = load_file(str(Path(base.path) / "model.safetensors"))
        moved = {k: (v.float() + 0.01 * v.float().std() * torch.randn(v.shape, generator=generator)).to(v.dtype)
                 for k, v in tensors.items()}
        save_file(moved, str(out / "model.safetensors"), metadata={"format": "pt"})
    return ModelRef(str(out))


def lora_variant(base: ModelRef, out: Path, seed: int) -> ModelRef:
    """A rank-16 LoRA on every linear projection with seeded non-zero B (peft starts B at 0: no change)."""
    if not (out / "adapter_config.json").is_file():
        import torch
        from peft import LoraConfig, get_peft_model

        from frpo_bench.models.loading import load_model
        torch.manual_seed(seed)
        model = get_peft_model(load_model(base), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.002)
        model.save_pretrained(out)
    return ModelRef(base.path, adapter=str(out))


def run_mode(mode: str, cells: list[ModelRef], prompts: list[str], cfg) -> dict:
    from frpo_bench.models import generate_vllm
    from frpo_bench.models.generate_hf import HFGenerator
    from frpo_bench.models.resident import release
    texts, generation_s, swap_s, start_s = [], 0.0, 0.0, 0.0
    starts_before = generate_vllm.POOL.starts
    started = time.perf_counter()
    for cell in cells:
        if mode == "hf":
            release()  # each cell's weights are new to the process, as in a run
            begin = time.perf_counter()
            texts.append(HFGenerator().generate(cell, prompts, cfg))
            generation_s += time.perf_counter() - begin
            continue
        if mode == "vllm-restart" and not cell.adapter:
            generate_vllm.POOL.close()  # a weight set of its own: its own engine
        lines = []
        texts.append(generate_vllm.VLLMGenerator(report=lines.append).generate(cell, prompts, cfg))
        for line in lines:  # the generator reports start, generation and swap seconds measured in the engine
            if line.startswith("vLLM engine ready in"):
                start_s += float(line.split(" in ")[1].rstrip("s"))
            if line.startswith("generated"):
                generation_s += float(line.split(" in ")[1].split("s ")[0])
                swap_s += float(line.split("weights (")[1].split("s)")[0]) if "swapping" in line else 0.0
    seconds = time.perf_counter() - started
    generate_vllm.POOL.close()
    return {"texts": texts, "seconds": seconds, "generation_s": generation_s, "swap_s": swap_s, "start_s": start_s,
            "engine_starts": generate_vllm.POOL.starts - starts_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--full", type=int, default=2, help="full-weight variants")
    parser.add_argument("--lora", type=int, default=1, help="LoRA variants")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--attention", default="grouped", help="the hf mode's attention kernel")
    parser.add_argument("--modes", nargs="+", default=["hf", "vllm-restart", "vllm-resident"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/resident_engine.json"))
    args = parser.parse_args()

    from frpo_bench.models.loading import load_tokenizer
    base = base_model(ModelConfig(id=args.model), Store())
    scratch = default_cache_dir() / "benchmarks" / "resident_engine"
    cells = ([base] + [full_variant(base, scratch / f"full{i}", i) for i in range(args.full)]
             + [lora_variant(base, scratch / f"lora{i}", i) for i in range(args.lora)])
    rows = load_rows("demo_benign", "eval", None) + load_rows("demo_harmful", "eval", None)
    prompts = [r["prompt"] for r in rows][:100]
    tokenizer, params, peak = load_tokenizer(base), parameter_count(base.path), matmul_peak(args.dtype)
    print(f"{len(cells)} cells ({args.full} full, {args.lora} LoRA) x {len(prompts)} prompts x 32 tokens, "
          f"{args.dtype}; matmul peak {peak / 1e9:.0f} GFLOP/s")
    results, restart_texts = [], None
    for mode in args.modes:
        settings = {"backend": "hf" if mode == "hf" else "vllm", "dtype": args.dtype, "max_new_tokens": 32,
                    "batch_size": 48, "attention": args.attention if mode == "hf" else "sdpa",
                    "vllm_adapters": "served" if mode == "vllm-restart" else "merged",
                    "vllm_enforce_eager": mode != "vllm-compiled"}
        run = run_mode(mode, cells, prompts, from_dict(GenerationConfig, settings))
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for cell in run["texts"] for t in cell)
        rate = tokens / run["generation_s"]
        row = {"mode": mode, "cells": len(cells), "seconds": round(run["seconds"], 1),
               "per_cell_s": round(run["seconds"] / len(cells), 1), "engine_starts": run["engine_starts"],
               "swap_s": round(run["swap_s"], 1), "start_s": round(run["start_s"], 1), "generation_s": round(run["generation_s"], 1), "tokens": tokens,
               "tokens_per_s": round(rate, 1), "fraction_of_peak": round(2 * params * rate / peak, 4)}
        if mode == "vllm-restart":
            restart_texts = run["texts"]
        if restart_texts is not None and mode != "vllm-restart":
            row["same_text_as_restart"] = [sum(a == b for a, b in zip(mine, theirs))
                                           for mine, theirs in zip(run["texts"], restart_texts)]
        results.append(row)
        print(json.dumps(row), flush=True)
    print("\n| mode | seconds (all cells) | per cell | engine starts | swapping | tokens/s | fraction of peak |"
          "\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['seconds']:.0f} | {r['per_cell_s']:.1f} | {r['engine_starts']} | {r['swap_s']:.1f} s "
              f"| {r['tokens_per_s']:.0f} | {100 * r['fraction_of_peak']:.1f}% |")
    write_json_atomic(args.out, {"machine": machine_info(), "model": args.model, "parameters": params,
                                 "dtype": args.dtype, "prompts": len(prompts), "max_new_tokens": 32, "batch_size": 48,
                                 "cells": {"full": args.full, "lora": args.lora}, "peak_flops": peak,
                                 "results": results})


if __name__ == "__main__":
    main()
