"""One-command GPU check: every stage on the accelerator, and the throughput figures the issues track.

    python benchmarks/gpu_check.py [--out DIR] [--wheelhouse DIR] [--smol-config DIR] [--quick]

No network. On one H100/H200 it takes at most ~8 minutes:
1. random-weight models built from configs: SmolLM2-135M-shaped from ../shared/models/smollm2-135m-config
   (config and tokenizer, no weights) and a Mistral-7B-shaped one from the config written below;
2. `frpo-bench run smoke` and a one-seed `demo` on the SmolLM2-shaped model, each in a fresh store;
   asserts from every stage.json that it ran on the GPU (device cuda:N) with nonzero peak memory, and
   samples GPU utilisation (nvidia-smi) over the demo: the share of its wall time the GPU was busy;
3. the RL step benchmark: GRPO and FRPO alternating, at least 10 timed steps each, median ratio;
4. throughput: the harness's HF backend on the GPU against the same call with device cpu (64 prompts
   x 64 new tokens), a local judge (next-token probabilities over 64 prompts), and the 7B-shaped
   probes (sampling 128 x 256 tokens; a LoRA r64 forward+backward over 128 x 352 tokens);
5. one table on stdout, the same as JSON in OUT/gpu_check.json.

A bare CUDA image (torch, transformers, peft, accelerate) lacks trl, datasets and lm-eval. Provide them
offline as wheels: on a machine with the package index, `pip download --dest wheelhouse trl==1.16.0
datasets lm-eval==0.4.13` (their pure-Python dependencies come along; add `--only-binary=:all:`), carry
the folder with the checkout, and pass `--wheelhouse wheelhouse`: missing packages are installed from it
with `pip install --no-index --find-links`. `--quick` shrinks every step (tiny model, smoke only, 2 RL
steps each) so the script itself can be tested on a CPU, where "the GPU" reads "the device it ran on".
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOL_CONFIG = ROOT.parent / "shared" / "models" / "smollm2-135m-config"
MISTRAL_7B = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
              "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False}


def ensure_packages(wheelhouse: Path | None) -> None:
    missing = [name for name, module in (("trl", "trl"), ("datasets", "datasets"), ("lm-eval", "lm_eval"))
               if importlib.util.find_spec(module) is None]
    if missing and wheelhouse:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheelhouse),
                        *missing], check=True)
    elif missing:
        raise SystemExit(f"missing {missing}: pass --wheelhouse DIR (see this script's docstring)")


def random_model(config_dir: Path | None, config: dict | None, out: Path, dtype: str = "float32") -> Path:
    """Random weights (seed 0) of a model shape, saved as safetensors with a tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(0)
    if config_dir is not None:
        cfg = AutoConfig.from_pretrained(config_dir)
        AutoTokenizer.from_pretrained(config_dir).save_pretrained(out)
    else:
        cfg = AutoConfig.for_model(**config)
    model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    return out


class Utilisation:
    """nvidia-smi's GPU utilisation sampled every 0.5 s in the background (empty without a GPU)."""

    def __init__(self):
        self.samples: list[float] = []
        self.process = None

    def __enter__(self):
        try:
            self.process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,"
                                             "nounits", "-lms", "500"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        except OSError:
            self.process = None
        return self

    def _read(self):
        for line in self.process.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self.process:
            self.process.terminate()

    def busy_share(self) -> float | None:
        return sum(s > 0 for s in self.samples) / len(self.samples) if self.samples else None


def frpo_bench(*args: str, store: Path) -> None:
    env = {**os.environ, "FRPO_BENCH_CACHE": str(store), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "frpo_bench", *args], check=True, env=env, cwd=ROOT)


def stage_records(store: Path) -> list[dict]:
    return [json.loads(p.with_name("stage.json").read_text()) for p in store.rglob("COMPLETE")]


def check_stages(records: list[dict], device: str) -> dict:
    wrong = [f"{r['kind']} {r['label']}: {r.get('device')} {r.get('peak_memory_bytes')}" for r in records
             if not str(r.get("device", "")).startswith(device)
             or (not r.get("peak_memory_bytes") and r["kind"] != "base")]  # a base stage only writes weights
    assert not wrong, "stages not on the device, or without a memory peak:\n" + "\n".join(wrong)
    on_device = sum(str(r.get("device", "")).startswith(device) for r in records)
    return {"stages": len(records), "on_device": on_device, "max_peak_gib": round(
        max(r.get("peak_memory_bytes") or 0 for r in records) / 2 ** 30, 2)}


def timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def generation_speedup(model_dir: Path, prompts: int, tokens: int) -> dict:
    from frpo_bench.config import GenerationConfig
    from frpo_bench.models import ModelRef
    from frpo_bench.models.device import use_device
    from frpo_bench.models.generate_hf import HFGenerator
    from frpo_bench.models.loading import chat_prompt, load_tokenizer
    from frpo_bench.models.resident import inference_model
    from frpo_bench.models.resident import release as release_resident_models
    from frpo_bench.typed import from_dict
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from generation_overhead import plain_generate
    cfg = from_dict(GenerationConfig, {"dtype": "bfloat16", "max_new_tokens": tokens, "batch_size": 16})
    texts = [f"Write a short note about topic number {i}." for i in range(prompts)]
    ref = ModelRef(str(model_dir))
    seconds = {}
    for device in ("auto", "cpu"):
        release_resident_models()  # the resident model of the other device must not be reused
        use_device(device)
        model = inference_model(ref, "bfloat16", merge_dtype="float32")
        model.generation_config.min_new_tokens = tokens  # random weights: every call decodes every step
        seconds[device] = timed(lambda: HFGenerator().generate(ref, texts, cfg))
        if device == "auto":  # the same weights, shape and batches through a plain generate() loop
            tokenizer = load_tokenizer(ref, padding_side="left")
            templated = [chat_prompt(tokenizer, t, None) for t in texts]
            seconds["plain"] = timed(lambda: plain_generate(model, tokenizer, templated, 16, tokens))
    release_resident_models()
    use_device("auto")
    return {"harness_hf_s": round(seconds["auto"], 2), "plain_generate_s": round(seconds["plain"], 2),
            "harness_over_plain": round(seconds["auto"] / seconds["plain"], 2), "host_only_s": round(seconds["cpu"], 2),
            "speedup": round(seconds["cpu"] / seconds["auto"], 2)}


def judge_throughput(model_dir: Path, prompts: int) -> dict:
    from frpo_bench.evaluators.hf_judge import JudgeModel, load_causal_judge, next_token_probs
    tokenizer, model = load_causal_judge(JudgeModel(str(model_dir), dtype="bfloat16"))
    texts = [f"Rate this answer about topic {i} from 1 to 5: it is fine." for i in range(prompts)]
    ids = [tokenizer.encode(str(g), add_special_tokens=False)[0] for g in range(1, 6)]
    seconds = timed(lambda: next_token_probs(tokenizer, model, texts, ids, batch_size=16))
    return {"judge_prompts_per_s": round(prompts / seconds, 1), "judge_device": str(model.device)}


def rl_ratio(model_dir: Path, steps: int, rounds: int) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rl_step import options, step_times

    from frpo_bench.defenses.frpo import FRPODefense
    from frpo_bench.defenses.grpo import GRPODefense
    from frpo_bench.defenses.rl_options import FRPOOptions, RLOptions
    from frpo_bench.models import ModelRef
    times = {"grpo": [], "frpo": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):  # alternating, so drifts of the machine hit both alike
            times["grpo"] += step_times(GRPODefense(), options(RLOptions, steps), ModelRef(str(model_dir)), Path(tmp),
                                        round_)
            times["frpo"] += step_times(FRPODefense(), options(FRPOOptions, steps), ModelRef(str(model_dir)), Path(tmp),
                                        round_)
    grpo, frpo = statistics.median(times["grpo"]), statistics.median(times["frpo"])
    return {"grpo_median_step_s": round(grpo, 3), "frpo_median_step_s": round(frpo, 3),
            "frpo_over_grpo": round(frpo / grpo, 3), "timed_steps_each": len(times["grpo"])}


def paper_scale_probe(out: Path) -> dict:
    """A Mistral-7B-shaped random model in bf16: one RL step's sampling and a LoRA r64 update."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**MISTRAL_7B), dtype=torch.bfloat16)
    prompts = torch.randint(0, 32000, (128, 96), device="cuda")
    sample = timed(lambda: model.generate(prompts, max_new_tokens=256, min_new_tokens=256, do_sample=True,
                                          top_p=0.9, pad_token_id=0), repeats=1)
    model.gradient_checkpointing_enable()
    lora = get_peft_model(model, LoraConfig(r=64, lora_alpha=64, target_modules="all-linear", task_type="CAUSAL_LM"))
    batch = torch.randint(0, 32000, (16, 352), device="cuda")
    torch.cuda.reset_peak_memory_stats()

    def update():
        for _ in range(8):  # 8 micro-batches of 16: 128 x 352 tokens
            lora(input_ids=batch, labels=batch).loss.backward()
    step = timed(update)
    return {"7b_sampling_128x256_s": round(sample, 1), "7b_lora_step_s": round(step, 1),
            "7b_lora_peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--wheelhouse", type=Path, default=None, help="wheels of trl, datasets, lm-eval (offline)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, smoke only: to test this script on a CPU")
    parser.add_argument("--smol-config", type=Path, default=SMOL_CONFIG,
                        help="SmolLM2-135M config and tokenizer, no weights (default: ../shared/models/...; on a "
                             "device machine, where ../shared does not travel, a carried copy)")
    args = parser.parse_args()
    ensure_packages(args.wheelhouse)
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.quick:
            from frpo_bench.models.tiny import build_tiny_model
            smol = build_tiny_model(tmp / "smol")
        else:
            smol = random_model(args.smol_config, None, tmp / "smol")
        started = time.time()
        frpo_bench("run", "smoke", "--out", str(tmp / "smoke-run"), store=tmp / "store-smoke")
        results["smoke"] = {**check_stages(stage_records(tmp / "store-smoke"), device),
                            "wall_s": round(time.time() - started, 1)}
        if not args.quick:
            started = time.time()
            with Utilisation() as busy:
                frpo_bench("run", "demo", "--set", f"model.id={smol}", "--set", "seeds=[0]", "--out",
                           str(tmp / "demo-run"), store=tmp / "store-demo")
            results["demo"] = {**check_stages(stage_records(tmp / "store-demo"), device),
                               "wall_s": round(time.time() - started, 1), "gpu_busy_share": busy.busy_share()}
        results["rl_step"] = rl_ratio(smol, steps=2 if args.quick else 11, rounds=1 if args.quick else 2)
        results["generation"] = generation_speedup(smol, 16 if args.quick else 64, 8 if args.quick else 64)
        results["judge"] = judge_throughput(smol, 16 if args.quick else 64)
        if device == "cuda" and not args.quick:
            results["paper_scale"] = paper_scale_probe(tmp)
    args.out.mkdir(parents=True, exist_ok=True)
    from frpo_bench.perf import machine_info
    results["machine"] = machine_info()
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n")
    from frpo_bench.results.schema import render_table
    rows = [[section, name, str(value)] for section, values in results.items()
            for name, value in (values.items() if isinstance(values, dict) else [("", values)])]
    print(render_table(["check", "measure", "value"], rows))
    print(f"written: {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
