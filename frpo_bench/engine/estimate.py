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

from frpo_bench.work import (
    PROMPT_TOKENS,
    UNKNOWN_MODEL_PARAMETERS,
    Forward,
    Generate,
    InferenceMemory,
    LmEvalStart,
    Shape,
    Train,
    TrainMemory,
    Work,
)

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


def rows_of(ref) -> int:
    """The rows a DataRef (or its key fields) selects, DEFAULT_ROWS where they cannot be read here."""
    from frpo_bench.typed import to_dict
    return prompt_count(ref if isinstance(ref, dict) else to_dict(ref, for_key=True))


def completion_tokens(stage) -> int:
    """The length of the completions a score stage reads: its generate parent's max_new_tokens (256 if none)."""
    source = stage.parents[0] if stage.parents else None
    return source.fields["generation"]["max_new_tokens"] if source is not None and source.kind == "generate" else 256


def plan_parameters(stages) -> float | None:
    """Parameters of a plan's model, from its base stage (None: no base stage, or a size unknown here)."""
    base = next((s for s in stages if s.kind == "base"), None)
    return model_parameters(base.fields["id"]) if base else None


def other_parameters(model: str | None, params: float) -> float:
    """The parameters of the model a step names (another model: a judge, a reward model), else the stage's."""
    return params if model is None else (model_parameters(model) or UNKNOWN_MODEL_PARAMETERS)


def step_seconds(step, params: float, machine: Machine) -> float:
    if isinstance(step, Train):
        bf16 = machine.is_gpu if step.bf16 is None else step.bf16
        return train_seconds(params, step.tokens, step.steps, machine, bf16, step.lora)
    if isinstance(step, Generate):
        return step.repeat * generate_seconds(params, step.sequences, step.new_tokens, step.batch, machine, step.dtype)
    if isinstance(step, Forward):
        return forward_seconds(other_parameters(step.model, params), step.tokens, machine, step.dtype)
    if isinstance(step, LmEvalStart):
        return LM_EVAL_START
    return step.seconds  # Wait


def memory_bytes(item, params: float) -> float:
    if isinstance(item, TrainMemory):
        return train_peak_bytes(params, item.tokens_in_flight, item.full)
    if isinstance(item, InferenceMemory):
        return item.copies * inference_peak_bytes(other_parameters(item.model, params), item.sequences, item.length)
    return 2 * params * item.copies  # WeightsMemory: bf16


def price(kind: str, work: Work, params: float, machine: Machine) -> Estimate:
    """A stage's work on `machine`: its loads, then its steps in sequence; peak memory the sum of its parts."""
    seconds = (work.loads * load_seconds(params, machine)
               + work.judge_loads * load_seconds(other_parameters(work.judge, params), machine)
               + sum(step_seconds(step, params, machine) for step in work.steps))
    return Estimate(kind, seconds, sum(memory_bytes(m, params) for m in work.memory), 1 if work.runs_model else 0)


def shape_of(stage) -> Shape:
    prompts = stage.fields.get("prompts")
    return Shape(rows=rows_of, prompts=prompt_count(prompts) if isinstance(prompts, dict) else 0,
                 completion_tokens=completion_tokens(stage), compared="start" in stage.uses, cpus=os.cpu_count() or 2)


def stage_work(stage) -> Work:
    """What a stage does, from its component (the engine's own stages: base, checkpoint, generate, align)."""
    from frpo_bench import registry
    payload, shape = stage.payload, shape_of(stage)
    if stage.kind == "align":
        return payload["cfg"].sft_work()
    if stage.kind == "attack":
        attack = payload["attack"]
        return registry.load("attack", attack.type).work(attack.options, shape)
    if stage.kind in ("harden", "repair"):
        defense = payload["defense"]
        component = registry.load("defense", defense.type)
        return (component.work if stage.kind == "harden" else component.repair_work)(defense.options, shape)
    if stage.kind == "score":
        evaluation = payload["evaluation"]
        return registry.load("evaluator", evaluation.evaluator).work(evaluation.options, shape)
    if stage.kind == "generate":
        gen = stage.fields["generation"]
        batch = payload["generation"].batch_size if gen["backend"] == "hf" else 256  # vLLM batches itself
        return Work(loads=1, steps=(Generate(prompt_count(stage.fields["prompts"]), gen["max_new_tokens"], batch,
                                             gen["dtype"]),),
                    memory=(InferenceMemory(batch, PROMPT_TOKENS + gen["max_new_tokens"]),))
    return Work()  # checkpoint: a record of weights its attack already saved


def stage_estimate(stage, params: float, machine: Machine) -> Estimate:
    if stage.kind == "base":
        convert = EMBEDDED_CONVERT_SECONDS_PER_PARAM * params if stage.fields.get("kind") == "embedded" else 0.0
        return Estimate("base", load_seconds(params, machine) + convert, 2 * params)
    return price(stage.kind, stage_work(stage), params, machine)


def step_flops(step, params: float) -> float:
    """The matmul FLOPs a step cannot do without: 6 N per trained token (full) or 4 N (LoRA), 2 N per token read
    or written."""
    if isinstance(step, Train):
        return (4 if step.lora else 6) * params * step.tokens
    if isinstance(step, Generate):
        return step.repeat * 2 * params * step.sequences * (step.prompt_tokens + step.new_tokens)
    if isinstance(step, Forward):
        return 2 * other_parameters(step.model, params) * step.tokens
    return 0.0


def stage_flops(stage, params: float) -> tuple[float, str]:
    """(matmul FLOPs, dtype) a stage cannot do without: its compute floor, at the dtype of its first compute step
    (float32 where it has none)."""
    if stage.kind == "base":
        return 0.0, "float32"
    steps = stage_work(stage).steps
    compute = [s for s in steps if isinstance(s, (Train, Generate, Forward))]
    if not compute:
        return 0.0, "float32"
    first = compute[0]
    dtype = ("bfloat16" if first.bf16 else "float32") if isinstance(first, Train) else first.dtype
    return sum(step_flops(s, params) for s in compute), dtype


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
