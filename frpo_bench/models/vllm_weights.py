"""Weights swapped into a running vLLM engine: one engine per base model serves every full-weight variant of it
(an attacked or hardened model of the same architecture, or a LoRA adapter merged into its base's weights)
without a restart.

`WeightSwap` is mixed into vLLM's workers (`worker_extension_cls`); `LLM.collective_rpc("load_weights_from",
args=(folder, adapter))` runs it on every worker, each loading the checkpoint's safetensors through the model's own
`load_weights` (which maps Hugging Face names onto vLLM's fused layers and shards them by tensor-parallel rank).
Only safetensors are read: no pickle. The caller resets the prefix cache after a swap (its blocks hold the old
weights' keys and values).
"""
from __future__ import annotations

import json
from pathlib import Path

# config fields that name or describe a checkpoint without changing the network's shape
NOT_ARCHITECTURE = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache"}


def architecture(folder: str) -> dict:
    """What must match for a checkpoint to load into an engine built for another: its config without names."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return {k: v for k, v in config.items() if k not in NOT_ARCHITECTURE}


def safetensor_files(folder: str) -> list[Path]:
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .safetensors weights (only safetensors are loaded into an engine)")
    return files


class WeightSwap:
    """Methods vLLM adds to its worker class; `self` is the worker (its `model_runner` holds the network)."""

    def load_weights_from(self, folder: str, adapter: str | None = None) -> None:
        """The checkpoint in `folder`, with a LoRA `adapter` merged into it when given (models/adapter_merge)."""
        from frpo_bench.models.adapter_merge import merged_tensors
        # vLLM's in-place reload: it restores the checkpoint-format parameters its kernels repacked (on CPUs the
        # linear layers' weights are packed for oneDNN and the originals dropped), loads, and repacks
        self.model_runner.reload_weights(weights_iterator=merged_tensors(safetensor_files(folder), adapter),
                                         is_checkpoint_format=True)
        repack_tied_heads(self.model_runner.get_model())


def repack_tied_heads(model) -> None:
    """Re-derive what a CPU kernel packed from a weight that no checkpoint name reaches: a tied LM head shares
    the embedding's parameter (reloaded) but keeps its own packed copy of the old values. Measured: without
    this, a swapped-in model's greedy text left HF's on 2 of 6 prompts; with it, none."""
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and method is not None and weight is not None and weight.numel():
            method.process_weights_after_loading(module)
