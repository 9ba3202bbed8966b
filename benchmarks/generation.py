"""Generation throughput, side by side in one run: a naive per-prompt HF loop, the harness's HF
backend and its vLLM backend, on the same prompts and settings.

    python benchmarks/generation.py [--model smollm2-135m-instruct] [--prompts 64] [--tokens 128]
                                    [--dtypes float32 bfloat16] [--out benchmarks/results/generation.json]
    python benchmarks/generation.py --demo-shapes ...   # the demo's: 100 prompts x 32 tokens, HF batch 48
    python benchmarks/generation.py --demo-shapes --repeats 2 ...   # and the steady state, a second pass

A row's `cell_s` is what one attacked cell's generation costs when its weights need an engine of their own
(generation + engine start: a full-weight model under vLLM today); `seconds` alone is the cost on a resident
engine (a LoRA-attacked cell served as an adapter, the engine started once per base).

Tokens/s counts the tokens each backend actually generated (EOS excluded) over its generation
time; vLLM's engine start is reported apart (it is paid once per base model, not per cell).
Fraction of peak = 2 x parameters x tokens/s over this machine's own matmul throughput in the
same dtype, measured here first (a 2048^3 matmul on all threads, best of 5).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import base_model

from frpo_bench.config import GenerationConfig, ModelConfig
from frpo_bench.data import load_rows
from frpo_bench.engine.store import Store
from frpo_bench.files import default_cache_dir, write_json_atomic
from frpo_bench.models.artifact import parameter_count
from frpo_bench.perf import machine_info, matmul_peak
from frpo_bench.typed import from_dict


def naive_loop(model, prompts, cfg) -> list[str]:
    """What many harnesses do: one prompt at a time, no batching."""
    import torch

    from frpo_bench.models.loading import chat_prompt, load_merged, load_tokenizer
    tokenizer = load_tokenizer(model)
    lm = load_merged(model, cfg.dtype).eval()
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(chat_prompt(tokenizer, prompt), return_tensors="pt", add_special_tokens=False)
            generated = lm.generate(**ids, max_new_tokens=cfg.max_new_tokens, do_sample=False, temperature=None,
                                    top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
            out.append(tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return out


def with_lora_adapter(model, out: Path):
    """A rank-16 LoRA on every linear projection, B = 0 as peft initialises it: served text equals the base's."""
    if not (out / "adapter_config.json").is_file():
        from peft import LoraConfig, get_peft_model

        from frpo_bench.models.loading import load_model
        get_peft_model(load_model(model), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")).save_pretrained(out)
    from frpo_bench.models import ModelRef
    return ModelRef(model.path, adapter=str(out))


def run_backend(name: str, model, passes: list[list[str]], cfg) -> tuple[list[list[str]], list[float], float]:
    """Completions and generation seconds of each pass (its own prompts), engine start seconds. Passes never repeat
    a prompt: vLLM's prefix cache would serve a repeated one's prompt from the pass before."""
    started, close = 0.0, lambda: None
    if name == "naive":
        generate = lambda prompts: naive_loop(model, prompts, cfg)  # noqa: E731
    elif name == "hf":
        from frpo_bench.models.generate_hf import HFGenerator
        generate = lambda prompts: HFGenerator().generate(model, prompts, cfg)  # noqa: E731
    else:
        from frpo_bench.models.generate_vllm import POOL, VLLMGenerator
        generator, close = VLLMGenerator(), POOL.close
        start = time.perf_counter()
        generator.generate(model, passes[0][:1], cfg)  # starts the engine
        started = time.perf_counter() - start
        generate = lambda prompts: generator.generate(model, prompts, cfg)  # noqa: E731
    texts, seconds = [], []
    try:
        for prompts in passes:
            start = time.perf_counter()
            texts.append(generate(prompts))
            seconds.append(time.perf_counter() - start)
    finally:
        close()
    return texts, seconds, started


def fraction_of_peak(params: int, tokens_per_s: float, peak: float) -> float | None:
    """2 x parameters x tokens/s over torch's matmul peak; None when above it (an engine with its own kernels,
    e.g. vLLM's bf16 on a CPU where torch's bf16 matmul is emulated, is not bounded by that peak)."""
    share = 2 * params * tokens_per_s / peak
    return round(share, 4) if share <= 1 else None


def percent(share: float | None) -> str:
    """A fraction of the matmul peak as the table prints it."""
    return f"{100 * share:.1f}%" if share is not None else "- (above torch's peak)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64, help="HF backend batch size")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--hf-dtypes", nargs="+", default=None,
                        help="dtypes for the hf backend (default: --dtypes); on a torch build without a native bf16 "
                             "matmul, bf16 generation through transformers takes hours")
    parser.add_argument("--backends", nargs="+", default=["naive", "hf", "vllm", "vllm+lora"],
                        help="vllm+lora serves a rank-16 LoRA adapter (zero-initialised B, so the same text) on the base")
    parser.add_argument("--attention", nargs="+", default=["sdpa"],
                        help="HF backend attention kernels, each a row: sdpa, eager, grouped")
    parser.add_argument("--demo-shapes", action="store_true",
                        help="the demo's generation: 100 prompts x 32 new tokens, HF batch 48")
    parser.add_argument("--repeats", type=int, default=1,
                        help="passes per row, each over its own prompts (the next --prompts rows); with 2 or more each "
                             "row also reports the steady state, the median tokens/s of the passes after the first (the "
                             "first pays kernels' set-up: a 264-prompt vLLM pass measured 30%% longer than the next)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generation.json"))
    args = parser.parse_args()
    if args.demo_shapes:
        args.prompts, args.tokens, args.batch_size = 100, 32, 48

    import torch

    from frpo_bench.models.loading import load_tokenizer
    model = base_model(ModelConfig(id=args.model), Store())
    tokenizer = load_tokenizer(model)
    params = parameter_count(model.path)
    rows = load_rows("demo_benign", "eval", None) + load_rows("demo_harmful", "eval", None)
    if args.repeats < 1 or args.repeats * args.prompts > len(rows):
        parser.error(f"--repeats {args.repeats} x --prompts {args.prompts} needs that many distinct prompts; "
                     f"there are {len(rows)}: use fewer")
    all_prompts = [r["prompt"] for r in rows]
    windows = [all_prompts[i * args.prompts: (i + 1) * args.prompts] for i in range(args.repeats)]
    prompts = windows[0]
    peaks = {d: matmul_peak(d) for d in args.dtypes}
    print(f"model {args.model}: {params / 1e6:.1f}M parameters; {len(prompts)} prompts x {args.tokens} new tokens; "
          f"{torch.get_num_threads()} threads; matmul peak " + ", ".join(f"{d} {p / 1e9:.0f} GFLOP/s"
                                                                      for d, p in peaks.items()))
    results, naive_rate, first_hf = [], None, None
    runs = [(b, a) for b in args.backends for a in (args.attention if b == "hf" else ["sdpa"])]
    for backend, attention in runs:
        dtypes = args.dtypes if backend.startswith("vllm") else (args.hf_dtypes or args.dtypes)
        for dtype in dtypes if backend != "naive" else dtypes[:1]:
            cfg = from_dict(GenerationConfig, {"backend": "vllm" if backend.startswith("vllm") else "hf", "dtype": dtype,
                                               "max_new_tokens": args.tokens, "batch_size": args.batch_size,
                                               "attention": attention})
            target = with_lora_adapter(model, default_cache_dir() / "benchmarks" / "lora16") if backend == "vllm+lora" else model
            outputs, passes, started = run_backend(backend.split("+")[0], target, windows, cfg)
            counts = [sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in out) for out in outputs]
            texts, tokens, seconds = outputs[0], counts[0], passes[0]
            rate = tokens / seconds
            naive_rate = naive_rate or rate
            row = {"backend": backend, "dtype": dtype, "attention": attention, "tokens": tokens,
                   "seconds": round(seconds, 1), "engine_start_s": round(started, 1), "cell_s": round(seconds + started, 1),
                   "tokens_per_s": round(rate, 1),
                   "vs_naive": round(rate / naive_rate, 2), "fraction_of_peak": fraction_of_peak(params, rate, peaks[dtype])}
            if len(passes) > 1:  # steady state: the median pass after the first (kernels and caches warm)
                steady = statistics.median(n / t for n, t in zip(counts[1:], passes[1:]))
                row.update(passes_s=[round(p, 2) for p in passes], steady_tokens_per_s=round(steady, 1),
                           steady_fraction_of_peak=fraction_of_peak(params, steady, peaks[dtype]))
            if backend == "hf":  # kernels differ in rounding: how many completions match the first HF row's
                first_hf = first_hf or texts
                row["same_text_as_first_hf"] = sum(a == b for a, b in zip(texts, first_hf))
            results.append(row)
            print(json.dumps(row), flush=True)
    print("\n| backend | dtype | attention | tokens/s | x naive | fraction of matmul peak | engine start | cell with start |"
          "\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['dtype']} | {r['attention']} | {r['tokens_per_s']:.0f} | {r['vs_naive']:.1f} | "
              + percent(r["fraction_of_peak"]) + f" | {r['engine_start_s']:.0f} s | {r['cell_s']:.0f} s |"
              + (f" steady: {r['steady_tokens_per_s']:.0f} tokens/s, {percent(r['steady_fraction_of_peak'])}"
                 if "steady_tokens_per_s" in r else ""))
    write_json_atomic(args.out, {"machine": machine_info(), "model": args.model, "parameters": params,
                                 "prompts": len(prompts), "batch_size": args.batch_size, "attention": args.attention,
                                 "max_new_tokens": args.tokens, "repeats": args.repeats, "peak_flops": peaks,
                                 "results": results})


if __name__ == "__main__":
    main()
