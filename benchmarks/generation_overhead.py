"""Where the harness's HF generation spends its time beyond a plain `generate()` of the same weights and shape.

    python benchmarks/generation_overhead.py [--prompts 64] [--tokens 64] [--batch-size 16] [--device cpu|cuda]
        [--config ../shared/models/smollm2-135m-config] [--out FILE]

Both sides generate greedily, the model already loaded, from the same chat-templated prompts: the harness
(HFGenerator: tokenizer load, chat templates, length-sorted even batches, the shared prefix computed once and
copied per batch, decoding) and a plain loop (the tokenizer's own left padding in the prompts' order, one
`model.generate` per batch, decoding). min_new_tokens makes both decode every step, so the comparison is of
the same work. A cProfile of the harness call names the functions its extra time is in.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def timed(fn, repeats: int = 2) -> float:
    fn()  # warm-up: the harness's model becomes resident, kernels are chosen
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def plain_generate(model, tokenizer, texts: list[str], batch: int, tokens: int) -> None:
    import torch
    with torch.inference_mode():
        for b in range(0, len(texts), batch):
            enc = tokenizer(texts[b: b + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                 temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
            tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--config", type=Path, default=ROOT.parent / "shared" / "models" / "smollm2-135m-config")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from gpu_check import random_model

    from frpo_bench.config import GenerationConfig
    from frpo_bench.models import ModelRef
    from frpo_bench.models.device import use_device
    from frpo_bench.models.generate_hf import HFGenerator
    from frpo_bench.models.loading import chat_prompt, load_tokenizer
    from frpo_bench.models.resident import inference_model
    from frpo_bench.perf import machine_info
    from frpo_bench.typed import from_dict
    use_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        ref = ModelRef(str(random_model(args.config, None, Path(tmp) / "model")))
        cfg = from_dict(GenerationConfig, {"dtype": args.dtype, "max_new_tokens": args.tokens,
                                           "batch_size": args.batch_size})
        prompts = [f"Write a short note about topic number {i}." for i in range(args.prompts)]
        tokenizer = load_tokenizer(ref, padding_side="left")
        model = inference_model(ref, args.dtype, merge_dtype="float32")
        generation_config = model.generation_config
        generation_config.min_new_tokens = args.tokens  # both sides decode every step (random weights stop anywhere)
        texts = [chat_prompt(tokenizer, p, None) for p in prompts]
        harness = timed(lambda: HFGenerator().generate(ref, prompts, cfg))
        plain = timed(lambda: plain_generate(model, tokenizer, texts, args.batch_size, args.tokens))
        profile = cProfile.Profile()
        profile.enable()
        HFGenerator().generate(ref, prompts, cfg)
        profile.disable()
    stats = pstats.Stats(profile)
    names = ("load_tokenizer", "chat_prompt", "opening", "batch_inputs", "repeated", "generate", "batch_decode",
             "inference_model", "_prepare_cache_for_generation", "_sample", "forward")
    parts = {}
    for (file, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        if name in names and ("frpo_bench" in file or "transformers" in file):
            parts[f"{Path(file).name}:{name}"] = max(parts.get(f"{Path(file).name}:{name}", 0.0), round(cumulative, 3))
    result = {"machine": machine_info(), "device": args.device, "dtype": args.dtype, "prompts": args.prompts,
              "tokens": args.tokens, "batch_size": args.batch_size, "harness_s": round(harness, 3),
              "plain_generate_s": round(plain, 3), "harness_over_plain": round(harness / plain, 2),
              "profile_cumulative_s": dict(sorted(parts.items(), key=lambda kv: -kv[1]))}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
