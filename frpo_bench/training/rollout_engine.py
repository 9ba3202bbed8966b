"""RL rollouts sampled on the run's resident vLLM engine on a CPU (`rollout_engine: true`), where TRL's own vLLM
mode (colocate) does not run: before each step's generation the policy's current weights (its LoRA merged in, in the
engine's dtype) are written as a safetensors checkpoint and swapped into the running engine (models/vllm_weights.py),
which then samples every completion of the step. The engine starts once per process and stays for the run's later
generation (generate_vllm.POOL), so evaluating the hardened model pays no second start.

As with the sampling copy, the rollouts come from a copy of the policy (bf16 when training under bf16 autocast):
off-policy only by that rounding, and the loss uses the training policy's own log-probabilities. Each completion
has its own sampling seed (from the run's seed, the step and its index): a prompt's G completions differ, and a
rerun samples the same ones.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

SHARED_MEMORY = Path("/dev/shm")


def rollout_seeds(seed: int, step: int, count: int) -> list[int]:
    """One sampling seed per completion of a step: distinct within the step, the same on a rerun."""
    return [((seed * 1_000_003 + step) * 100_003 + i) % (2 ** 31 - 1) for i in range(count)]


def rollout_sampling(max_tokens: int, temperature: float, top_p: float, top_k: Optional[int], min_p: Optional[float],
                     repetition_penalty: float, stop_token_ids: list[int]) -> dict:
    """vLLM SamplingParams fields for TRL's generation settings (TRL's `top_k` None or 0 and `min_p` None: off)."""
    return dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k or -1, min_p=min_p or 0.0,
                repetition_penalty=repetition_penalty, stop_token_ids=list(stop_token_ids))


def unshared(state: dict) -> dict:
    """`state` without a second name for a tensor already in it (a tied LM head is the embedding: safetensors
    refuses shared storage, and the engine re-derives a tied head from the embedding)."""
    seen, out = set(), {}
    for name, tensor in state.items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor
    return out


def scratch_root(needed_bytes: int) -> Optional[str]:
    """Shared memory for the per-step checkpoints when it holds two of them (some containers give /dev/shm
    64 MB), else the system's temporary directory."""
    try:
        if SHARED_MEMORY.is_dir() and shutil.disk_usage(SHARED_MEMORY).free > 2 * needed_bytes:
            return str(SHARED_MEMORY)
    except OSError:
        pass
    return None


class RolloutEngine:
    """Holds the folder of the weights last swapped in; `rollouts(policy, step, prompt_ids, sampling, seeds)`
    refreshes them when the step moved and returns the engine's completion token ids."""

    def __init__(self, dtype: str, tokenizer, report: Callable[[str], None] = print):
        from frpo_bench.generation_config import GenerationConfig
        self.dtype, self.tokenizer, self.report = dtype, tokenizer, report
        self.engine_settings = GenerationConfig(dtype=dtype)  # the engine's defaults, so later generation can share it
        self.root: Optional[Path] = None
        self.current: Optional[Path] = None
        self.step: Optional[int] = None
        self.swaps = 0

    def refresh(self, policy, step: int) -> Path:
        """A checkpoint of `policy`'s merged weights for `step` (the previous one deleted)."""
        import torch
        from safetensors.torch import save_file

        from frpo_bench.training.sampling_copy import merged_state, plain_model
        base = plain_model(policy)
        dtype = getattr(torch, self.dtype)
        tensors = {k: v.detach().to(dtype).contiguous() for k, v in unshared(merged_state(base)).items()}
        if self.root is None:
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            self.root = Path(tempfile.mkdtemp(prefix="frpo-bench-rollouts-", dir=scratch_root(size)))
        folder = self.root / f"step-{step}"
        folder.mkdir()
        base.config.to_json_file(str(folder / "config.json"))
        if self.current is None:  # an engine that starts here reads its tokenizer from the first folder, once
            self.tokenizer.save_pretrained(str(folder))
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        previous, self.current, self.step = self.current, folder, step
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        return folder

    def rollouts(self, policy, step: int, prompt_ids: list[list[int]], sampling: dict, seeds: list[int]) -> list[list[int]]:
        from frpo_bench.models import ModelRef
        from frpo_bench.models.generate_vllm import VLLMGenerator
        if step != self.step:
            self.refresh(policy, step)
            self.swaps += 1
        per_prompt = [{**sampling, "seed": s} for s in seeds]
        return VLLMGenerator(self.report).request(ModelRef(str(self.current)), prompt_ids, per_prompt,
                                                  self.engine_settings, sampling["max_tokens"])["token_ids"]

    def close(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = self.current = self.step = None
