"""Before launching: expected wall time, GPU-hours and peak memory of a plan, from a small cost model.

Assumptions (printed by `frpo-bench plan --help`):
- Training (alignment, attacks, TAR, RR, the RL update) is compute-bound: 6 N FLOPs per token for
  full fine-tuning (forward, activation and weight gradients), 4 N for LoRA (no weight gradients of
  the frozen base), plus 2 N for the recomputed forward of gradient checkpointing, assumed on GPUs
  (the paper's 7B models need it), at a model FLOP utilisation (MFU) of the dtype's matmul peak,
  plus a fixed cost per optimizer step (launches, the optimizer, Python).
- HF generation is bound by per-step overhead, not bandwidth, at these sizes: on a GPU each decode
  step of a batch costs a fixed time plus a time per billion parameters, and never less than reading
  the weights once from memory; on a CPU a fixed time per step plus the batch's 2 N FLOPs per token at
  a share of the dtype's matmul peak.
- Every stage that loads a model pays loading at the card's host-to-device rate plus a fixed start;
  lm-eval adds its own start-up; text-check scoring is free.
- Peak memory: bf16 weights (2 bytes/parameter; fp32 master weights, gradients and AdamW moments,
  16 bytes/parameter, for full fine-tuning), plus activations per token in flight.
- An RL step samples prompts x G completions with HF generate, then one training pass over them;
  a reference-model forward is added when beta > 0.

Calibration: the GPU constants reproduce gpu_check_h200.json (one H200) within 25%; the CPU ones are the
log-space least-squares fit of benchmarks/fit_cost_model.py to every CPU measurement in benchmarks/results
(generation, training, each stage kind of the demo run alone), each on its machine's measured matmul peaks, all
within 1.6x after it (cost_model_fit.json). tests/test_estimate.py refits: a new measurement moves the model.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

GIB = 1024 ** 3


@dataclass(frozen=True)
class Machine:
    name: str
    bf16_flops: float  # dense bf16 peak, FLOP/s
    fp32_flops: float
    memory_bytes: float
    bandwidth: float  # memory bandwidth, bytes/s
    load_rate: float  # weights loaded per second (disk and host-to-device)
    is_gpu: bool


MACHINES = {
    "h100": Machine("h100", 989e12, 67e12, 80 * GIB, 3.35e12, 2e9, True),
    "h200": Machine("h200", 989e12, 67e12, 141 * GIB, 4.8e12, 2e9, True),
    "a100-80g": Machine("a100-80g", 312e12, 19.5e12, 80 * GIB, 2.0e12, 2e9, True),
    # a CPU: replaced by this machine, its matmul peaks measured when asked (this_cpu); these are one
    # 2-core AVX512-BF16 machine's, for when measuring is not wanted
    "cpu": Machine("cpu", 951e9, 223e9, 24 * GIB, 20e9, 0.5e9, False),
}


def this_cpu() -> Machine:
    """This machine as a CPU target: its own measured fp32 and bf16 matmul peaks (machines differ by 7x in
    bf16 among the project's own), memory and core count as the OS reports them."""
    import os
    from frpo_bench.perf import matmul_peak
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Machine(f"cpu (this machine, {len(os.sched_getaffinity(0))} cores)", matmul_peak("bfloat16"),
                   matmul_peak("float32"), memory, 20e9, 0.5e9, False)

# Fitted constants (the module docstring says to what; the CPU ones by benchmarks/fit_cost_model.py)
TRAIN_MFU = {"gpu": 0.285, "float32": 0.803, "bfloat16": 0.812}  # GPU (bf16) and CPU per dtype, of the matmul peak
TRAIN_STEP_OVERHEAD = {"gpu": 0.25, "cpu": 1.4}  # seconds per optimizer step (CPU: AdamW over fp32 weights, logging)
GPU_DECODE_STEP = (0.01912, 0.001027)  # seconds per decode step of one batch: fixed + per billion parameters
CPU_DECODE_STEP = 0.0808  # seconds per decode step of one batch (Python, HF generate's bookkeeping)
CPU_DECODE_MFU = {"float32": 0.255, "bfloat16": 0.504}  # of the dtype's measured matmul peak, the batch's FLOPs
LOAD_FIXED = {"gpu": 3.0, "cpu": 1.6}  # seconds to start a model besides reading its weights (GPU: CUDA set-up)
LM_EVAL_START = 2.87  # lm-eval in-process on weights already loaded: its task set-up
FORWARD_MFU = {"gpu": 0.3, "cpu": 1.07}  # gradient-free forwards over whole sequences (prefill-like); CPU: the demo's KL,
# above 1 because its float32 runs at matmul precision "medium" and the fp32 probe reads low on some machines
EMBEDDED_CONVERT_SECONDS_PER_PARAM = 1.85e-7  # de-quantizing the packaged GGUF (25 s for SmolLM2-135M, 2-core Xeon)
ACTIVATION_BYTES_PER_TOKEN_PER_BPARAM = 1.35e5  # with gradient checkpointing, bf16 (from the 18.6 GiB peak)

KNOWN_PARAMETERS = {  # for Hub models whose config is not on this machine
    "mistralai/Mistral-7B-Instruct-v0.1": 7.24e9, "mistralai/Mistral-7B-Instruct-v0.2": 7.24e9,
    "meta-llama/Meta-Llama-3-8B-Instruct": 8.03e9, "meta-llama/Llama-3.1-8B-Instruct": 8.03e9,
    "GraySwanAI/Mistral-7B-Instruct-RR": 7.24e9, "GraySwanAI/Llama-3-8B-Instruct-RR": 8.03e9,
    "lapisrocks/Llama-3-8B-Instruct-TAR-Refusal": 8.03e9, "smollm2-135m-instruct": 1.35e8,
    "HuggingFaceTB/SmolLM2-135M-Instruct": 1.35e8, "allenai/Llama-3.1-8B-Instruct-RM-RB2": 7.5e9,
    "google/gemma-2b": 2.5e9, "cais/HarmBench-Llama-2-13b-cls": 13.0e9, "cais/HarmBench-Mistral-7b-val-cls": 7.24e9,
    "tiny-llama": 2.3e5,
}


def config_parameters(config: dict) -> float:
    """Parameters of a decoder-only transformer from its config.json (embeddings, attention with grouped
    KV heads, gated MLP, an untied head unless tie_word_embeddings)."""
    d, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config.get("num_attention_heads", 1)
    kv = config.get("num_key_value_heads", heads)
    ff = config.get("intermediate_size", 4 * d)
    attention = 2 * d * d + 2 * d * (d * kv // heads)
    per_layer = attention + 3 * d * ff
    head = 0 if config.get("tie_word_embeddings", False) else vocab * d
    return float(vocab * d + layers * per_layer + head)


def model_parameters(model_id: str) -> float | None:
    if model_id in KNOWN_PARAMETERS:
        return KNOWN_PARAMETERS[model_id]
    config = Path(model_id).expanduser() / "config.json"
    if config.is_file():
        return config_parameters(json.loads(config.read_text()))
    return None


# --- the cost of each kind of work ----------------------------------------------------------------

def train_flops_per_token(params: float, lora: bool, machine: Machine) -> float:
    return (4 if lora else 6) * params + (2 * params if machine.is_gpu and lora else 0)


def train_seconds(params: float, tokens: float, steps: int, machine: Machine, bf16: bool, lora: bool) -> float:
    if machine.is_gpu:
        rate = machine.bf16_flops * TRAIN_MFU["gpu"]
    else:
        rate = (machine.bf16_flops * TRAIN_MFU["bfloat16"]) if bf16 else (machine.fp32_flops * TRAIN_MFU["float32"])
    overhead = TRAIN_STEP_OVERHEAD["gpu" if machine.is_gpu else "cpu"]
    return train_flops_per_token(params, lora, machine) * tokens / rate + steps * overhead


def generate_seconds(params: float, sequences: int, new_tokens: int, batch: int, machine: Machine,
                     dtype: str = "bfloat16") -> float:
    batches = math.ceil(sequences / max(batch, 1))
    if machine.is_gpu:
        fixed, per_billion = GPU_DECODE_STEP
        step = max(fixed + per_billion * params / 1e9, 2 * params / machine.bandwidth)
        return batches * new_tokens * step
    peak = machine.bf16_flops if dtype == "bfloat16" else machine.fp32_flops
    return new_tokens * (batches * CPU_DECODE_STEP + 2 * params * sequences / (peak * CPU_DECODE_MFU[dtype]))


def forward_seconds(params: float, tokens: float, machine: Machine, dtype: str = "float32") -> float:
    """A forward pass without gradients over `tokens` (reference models, reward models, judges' prefill), on a
    CPU at a share of `dtype`'s matmul peak."""
    if machine.is_gpu:
        return 2 * params * tokens / (machine.bf16_flops * FORWARD_MFU["gpu"])
    peak = machine.bf16_flops if dtype == "bfloat16" else machine.fp32_flops
    return 2 * params * tokens / (peak * FORWARD_MFU["cpu"])


def load_seconds(params: float, machine: Machine) -> float:
    return LOAD_FIXED["gpu" if machine.is_gpu else "cpu"] + 2 * params / machine.load_rate


def train_peak_bytes(params: float, tokens_in_flight: float, full: bool) -> float:
    weights = 16 * params if full else 2 * params
    return weights + ACTIVATION_BYTES_PER_TOKEN_PER_BPARAM * tokens_in_flight * params / 1e9


def inference_peak_bytes(params: float, sequences: int, length: int) -> float:
    return 2 * params + 0.05 * ACTIVATION_BYTES_PER_TOKEN_PER_BPARAM * sequences * length * params / 1e9


# --- stages ---------------------------------------------------------------------------------------

SEQUENCE_FILL = 0.5  # training sequences fill about half their max_length (they are cut there, padded per batch)
PROMPT_TOKENS = 64  # a short request, chat-templated (the demo's: ~55 with SmolLM2's template)
JUDGE_PROMPT_TOKENS = 700  # a judge's template around prompt and response
API_SECONDS_PER_REQUEST = 4.0
PAIR_RESPONSE_TOKENS = 256  # a held-out (prompt, response) pair's response: a worked answer or an instruction's reply
LM_EVAL_GENERATION = ("gsm8k", "math500")  # evaluators that run lm-eval's generate-until tasks on the model
CODE_CHECK_SECONDS = 1.0  # EvalPlus running one solution against its base and extra inputs, per process
TEXT_CHECK_SECONDS = 0.05
DEFAULT_ROWS = 500  # when a prompt set's size cannot be read here


@dataclass
class Estimate:
    kind: str
    seconds: float
    peak_bytes: float
    gpus: int = 1


def prompt_count(prompts: dict) -> int:
    from frpo_bench.engine.stages import prompt_count as selected
    return selected(prompts) or DEFAULT_ROWS


def sft_tokens(fields: dict) -> float:
    """Tokens a supervised fine-tuning stage trains on (sequences fill about half their max_length)."""
    return fields["steps"] * fields["batch_size"] * fields["max_length"] * SEQUENCE_FILL


def completion_tokens(stage) -> int:
    """The length of the completions a score stage reads: its generate parent's max_new_tokens (256 if none)."""
    source = stage.parents[0] if stage.parents else None
    return source.fields["generation"]["max_new_tokens"] if source is not None and source.kind == "generate" else 256


def plan_parameters(stages) -> float | None:
    """Parameters of a plan's model, from its base stage (None: no base stage, or a size unknown here)."""
    base = next((s for s in stages if s.kind == "base"), None)
    return model_parameters(base.fields["id"]) if base else None


def sft_estimate(kind: str, fields: dict, micro_batch: int, params: float, machine: Machine) -> Estimate:
    lora = fields.get("lora") is not None
    tokens = sft_tokens(fields)
    seconds = 2 * load_seconds(params, machine) + train_seconds(params, tokens, fields["steps"], machine,
                                                               fields.get("bf16", False), lora)
    return Estimate(kind, seconds, train_peak_bytes(params, micro_batch * fields["max_length"], not lora))


PAIR_PASSES = {"repnoise": 2, "vaccine": 2, "booster": 3}  # forward-backward passes per step over one batch each


def pair_defense_estimate(kind: str, options: dict, params: float, machine: Machine) -> Estimate:
    """RepNoise, Vaccine, Booster: SFT-like steps of several forward-backward passes each."""
    lora = options.get("lora") is not None
    tokens = PAIR_PASSES[kind] * options["steps"] * options["batch_size"] * options["max_length"] * SEQUENCE_FILL
    seconds = 2 * load_seconds(params, machine) + train_seconds(params, tokens, options["steps"], machine,
                                                                machine.is_gpu, lora)
    return Estimate("harden", seconds, train_peak_bytes(params, options["batch_size"] * options["max_length"], not lora))


ABLATION_LAYERS = 32  # decoder layers: barely grow with size below ~10B (SmolLM2-135M 30, Mistral-7B 32)
ABLATION_POSITIONS = 5  # post-instruction tokens of a chat template (SmolLM2's 5)


def ablation_estimate(fields: dict, params: float, machine: Machine) -> Estimate:
    """Refusal-direction ablation: forwards for the two means, then per candidate (layers under the depth share x
    positions) one pass over both validation sets and, at worst, one induce pass over the harmless one."""
    means, harmful_val, harmless_val = (sum(prompt_count(d) for d in fields["data"][:2]),
                                        prompt_count(fields["data"][2]), prompt_count(fields["data"][3]))
    candidates = int(fields.get("max_layer_share", 0.8) * ABLATION_LAYERS) * ABLATION_POSITIONS
    tokens = PROMPT_TOKENS * (means + candidates * (harmful_val + 2 * harmless_val))
    return Estimate("attack", 3 * load_seconds(params, machine) + forward_seconds(params, tokens, machine),
                    inference_peak_bytes(params, 32, PROMPT_TOKENS))


def rl_estimate(options: dict, params: float, machine: Machine) -> Estimate:
    sequences = options["prompts_per_step"] * options["num_generations"]
    length = options["max_completion_length"]
    tokens = sequences * (PROMPT_TOKENS + length)
    lora = options.get("lora") is not None
    bf16 = machine.is_gpu or bool(options.get("bf16"))  # a CPU where bf16 measured slower trains and samples in fp32
    step = (generate_seconds(params, sequences, length, sequences, machine, "bfloat16" if bf16 else "float32")
            + train_seconds(params, tokens, 1, machine, bf16, lora))
    if options.get("beta", 0) > 0:  # the reference model's log-probs: one forward
        step += forward_seconds(params, tokens, machine)
    if options.get("helpfulness_reward") == "reward_model":
        reward_params = model_parameters(options.get("reward_model", "")) or 8e9
        step += forward_seconds(reward_params, tokens, machine)
    peak = train_peak_bytes(params, tokens, not lora)
    return Estimate("harden", 2 * load_seconds(params, machine) + options["steps"] * step, peak)


def tar_estimate(options: dict, params: float, machine: Machine) -> Estimate:
    batch_tokens = options["batch_size"] * options["max_length"] * SEQUENCE_FILL
    passes = options["inner_steps"] + options["inner_steps"] // max(options.get("tamper_every", 1), 1) + 1
    seconds = options["steps"] * passes * train_seconds(params, batch_tokens, 1, machine, True, False)
    peak = train_peak_bytes(params, options["batch_size"] * options["max_length"], True) + 2 * params  # + reference
    return Estimate("harden", 2 * load_seconds(params, machine) + seconds, peak)


def rr_estimate(options: dict, params: float, machine: Machine) -> Estimate:
    batch_tokens = 2 * options["batch_size"] * options["max_length"] * SEQUENCE_FILL  # harmful + retain
    step = train_seconds(params, batch_tokens * 1.5, 1, machine, True, True)  # + the frozen forward
    peak = train_peak_bytes(params, 2 * options["batch_size"] * options["max_length"], False)
    return Estimate("harden", 2 * load_seconds(params, machine) + options["steps"] * step, peak)


def score_estimate(fields: dict, options: dict, params: float, machine: Machine, completion_tokens: int = 256,
                   two_models: bool = True) -> Estimate:
    """`options`: the evaluation's options with their transport fields (batch sizes, concurrency);
    `completion_tokens`: the completions' length (what KL reads after the prompt); `two_models`: KL has a
    model before the attack to compare with (an unattacked model's KL is 0 without compute)."""
    evaluator, n = fields["evaluator"], prompt_count(fields["prompts"])
    if evaluator in LM_EVAL_GENERATION:
        seconds = (LM_EVAL_START + load_seconds(params, machine)
                   + generate_seconds(params, n, options.get("max_gen_toks", 256), options.get("batch_size", 8),
                                      machine, options.get("dtype", "bfloat16")))
        return Estimate("score", seconds, inference_peak_bytes(params, options.get("batch_size", 8), 1024))
    if evaluator == "evalplus":  # greedy answers on the resident weights, then each solution run in a subprocess
        batch, tokens = options.get("batch_size", 8), options.get("max_new_tokens", 768)
        seconds = (load_seconds(params, machine) + generate_seconds(params, n, tokens, batch, machine,
                                                                    options.get("dtype", "bfloat16"))
                   + n * CODE_CHECK_SECONDS / max(options.get("parallel") or (os.cpu_count() or 2) // 2, 1))
        return Estimate("score", seconds, inference_peak_bytes(params, batch, PROMPT_TOKENS + tokens))
    if evaluator == "kl_to_start":  # the model and the one before the attack read every completion (prefill)
        if not two_models:
            return Estimate("score", TEXT_CHECK_SECONDS, 0, 0)
        tokens = n * (PROMPT_TOKENS + completion_tokens)  # both models stay resident across a cell: one load
        dtype = options.get("dtype", "float32")
        return Estimate("score", load_seconds(params, machine) + 2 * forward_seconds(params, tokens, machine, dtype),
                        2 * inference_peak_bytes(params, options.get("batch_size", 8), PROMPT_TOKENS + completion_tokens))
    if evaluator == "response_loss":  # the model reads held-out pairs once (prefill-like)
        tokens = n * (PROMPT_TOKENS + PAIR_RESPONSE_TOKENS)
        return Estimate("score", load_seconds(params, machine) + forward_seconds(params, tokens, machine,
                                                                                   options.get("dtype", "float32")),
                        inference_peak_bytes(params, options.get("batch_size", 8), PROMPT_TOKENS + PAIR_RESPONSE_TOKENS))
    judge = options.get("judge_model") or options.get("classifier") or options.get("reward_model")
    if "max_concurrency" in options and not options.get("serve_model"):  # an LLM judge behind an endpoint
        return Estimate("score", n * API_SECONDS_PER_REQUEST / max(options.get("max_concurrency", 8), 1), 0, 0)
    if judge:  # a local judge model reads every prompt (prefill, compute-bound)
        judge_params = model_parameters(judge) or 8e9
        moderated = math.ceil(n / 32) * API_SECONDS_PER_REQUEST if options.get("moderation") == "openai" else 0.0
        return Estimate("score", load_seconds(judge_params, machine) + moderated
                        + forward_seconds(judge_params, n * JUDGE_PROMPT_TOKENS, machine),
                        inference_peak_bytes(judge_params, options.get("batch_size", 4), JUDGE_PROMPT_TOKENS))
    return Estimate("score", TEXT_CHECK_SECONDS, 0, 0)


def stage_estimate(stage, params: float, machine: Machine) -> Estimate:
    fields, payload = stage.fields, stage.payload
    if stage.kind == "base":
        convert = EMBEDDED_CONVERT_SECONDS_PER_PARAM * params if fields.get("kind") == "embedded" else 0.0
        return Estimate("base", load_seconds(params, machine) + convert, 2 * params)
    if stage.kind == "align":
        return sft_estimate("align", fields, payload["cfg"].micro_batch_size, params, machine)
    if stage.kind == "attack":
        if fields.get("type") == "refusal_ablation":
            return ablation_estimate(fields, params, machine)
        if "steps" not in fields:  # an attack that does not train (the cost model knows fine-tuning only)
            return Estimate("attack", 2 * load_seconds(params, machine), 2 * params)
        from frpo_bench.typed import to_dict
        micro = to_dict(payload["attack"].options).get("micro_batch_size") or fields["batch_size"]
        return sft_estimate("attack", fields, micro, params, machine)
    if stage.kind == "repair":  # reads the attacked, defended and base weights; a few matrix products
        return Estimate("repair", 3 * load_seconds(params, machine), 3 * params)
    if stage.kind == "checkpoint":  # a record of weights its attack already saved
        return Estimate("checkpoint", 0.0, 0, 0)
    if stage.kind == "harden":
        options = fields["options"]
        kind = fields["type"]
        if kind in ("grpo", "frpo"):
            return rl_estimate(options, params, machine)
        if kind == "tar":
            return tar_estimate(options, params, machine)
        if kind == "rr":
            return rr_estimate(options, params, machine)
        if kind in PAIR_PASSES:
            return pair_defense_estimate(kind, options, params, machine)
        return Estimate("harden", 2 * load_seconds(params, machine), 2 * params)  # a released checkpoint
    if stage.kind == "generate":
        gen = fields["generation"]
        n = prompt_count(fields["prompts"])
        batch = payload["generation"].batch_size if gen["backend"] == "hf" else 256  # vLLM batches itself
        seconds = load_seconds(params, machine) + generate_seconds(params, n, gen["max_new_tokens"], batch,
                                                                   machine, gen["dtype"])
        return Estimate("generate", seconds, inference_peak_bytes(params, batch, PROMPT_TOKENS + gen["max_new_tokens"]))
    from frpo_bench.typed import to_dict
    return score_estimate(fields, to_dict(payload["evaluation"].options), params, machine, completion_tokens(stage),
                          "start" in stage.uses)


def stage_flops(stage, params: float) -> tuple[float, str]:
    """(matmul FLOPs, dtype) a stage cannot do without: its compute floor. Training 6 N per token (full) or
    4 N (LoRA), generation and model scoring 2 N per token read or written; 0 for records and text checks."""
    fields = stage.fields
    options = fields.get("options") if isinstance(fields.get("options"), dict) else {}
    if stage.kind in ("align", "attack") and "steps" in fields:
        return (4 if fields.get("lora") else 6) * params * sft_tokens(fields), "bfloat16" if fields.get("bf16") else "float32"
    if stage.kind == "generate":
        gen = fields["generation"]
        return 2 * params * prompt_count(fields["prompts"]) * (PROMPT_TOKENS + gen["max_new_tokens"]), gen["dtype"]
    if stage.kind == "score" and fields["evaluator"] in LM_EVAL_GENERATION:
        shots = options.get("num_fewshot", 5)
        return (2 * params * prompt_count(fields["prompts"]) * (PROMPT_TOKENS * (shots + 1) + options.get("max_gen_toks", 256)),
                options.get("dtype", "float32"))
    if stage.kind == "score" and fields["evaluator"] == "evalplus":
        return (2 * params * prompt_count(fields["prompts"]) * (PROMPT_TOKENS + options.get("max_new_tokens", 768)),
                options.get("dtype", "bfloat16"))
    if stage.kind == "score" and fields["evaluator"] == "kl_to_start" and "start" in stage.uses:
        tokens = prompt_count(fields["prompts"]) * (PROMPT_TOKENS + completion_tokens(stage))
        return 2 * 2 * params * tokens, options.get("dtype", "float32")
    return 0.0, "float32"


def estimate_plan(stages, model_id: str, machine: Machine) -> tuple[list[Estimate], float]:
    params = model_parameters(model_id)
    if params is None:
        from frpo_bench.errors import ConfigError
        raise ConfigError("model.id", model_id, "has an unknown size here (no config.json on this machine)",
                          "download the model once, or give a local directory")
    return [stage_estimate(s, params, machine) for s in stages], params


def estimate_report(stages, model_id: str, machine_name: str) -> str:
    from frpo_bench.results.schema import render_table
    machine = this_cpu() if machine_name == "cpu" else MACHINES[machine_name]
    estimates, params = estimate_plan(stages, model_id, machine)
    from frpo_bench.engine.stages import sort_of
    by_kind: dict[str, list[Estimate]] = {}
    for stage, e in zip(stages, estimates):
        by_kind.setdefault(" ".join(str(x) for x in sort_of(stage.kind, stage.fields)), []).append(e)
    lines, total, gpu_hours = [], 0.0, 0.0
    for kind, items in by_kind.items():
        seconds = sum(e.seconds for e in items)
        peak = max(e.peak_bytes for e in items)
        hours = sum(e.seconds * e.gpus for e in items) / 3600 if machine.is_gpu else 0.0
        total, gpu_hours = total + seconds, gpu_hours + hours
        fits = "yes" if peak <= machine.memory_bytes else f"NO (> {machine.memory_bytes / GIB:.0f} GiB)"
        lines.append([kind, str(len(items)), f"{seconds / 3600:.2f}", f"{hours:.1f}" if machine.is_gpu else "-",
                      f"{peak / GIB:.1f}", fits])
    lines.append(["total", str(len(estimates)), f"{total / 3600:.2f}", f"{gpu_hours:.1f}" if machine.is_gpu else "-",
                  "", ""])
    table = render_table(["stages of", "count", "hours (one device, in sequence)", "GPU-hours",
                          "peak GiB (largest stage)", "fits one device"], lines)
    return (f"estimate for {len(estimates)} stages of a {params / 1e9:.2f}B-parameter model on one {machine.name} "
            f"(cost model: frpo_bench/engine/estimate.py; `frpo-bench plan --help` states its assumptions)\n{table}")
