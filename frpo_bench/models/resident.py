"""Inference models kept loaded between the stages of one process.

A cell's generation stages (one per prompt set) and its scoring stages (lm-eval, KL) read the same
weights one after another, and every KL of an attack sweep reads the same starting model: here a
load of the 135M demo model costs ~1 s a stage, a 7B one on a GPU much more. The last `CAPACITY`
models stay resident, keyed by what makes their weights (the artifact, its files' modification
times, the dtype the adapter was merged in, the compute dtype) and the attention kernel. Callers
must not modify what they get (no .to(), no training); the runner releases them before training.
"""
from __future__ import annotations

import os
from collections import OrderedDict

from frpo_bench.models import ModelRef

CAPACITY = 2  # KL holds two (the model and the one before the attack); more would only hold memory
_resident: "OrderedDict[tuple, object]" = OrderedDict()


def inference_model(ref: ModelRef, dtype: str, attention: str = "sdpa", merge_dtype: str | None = None):
    """The merged model in eval mode: an adapter merged in `merge_dtype` (default: `dtype`), then cast to
    `dtype`, with the attention kernel set; loaded once while it stays among the last CAPACITY used."""
    key = (ref, _version(ref), merge_dtype or dtype, dtype, attention)
    if key in _resident:
        _resident.move_to_end(key)
        return _resident[key]
    while len(_resident) >= CAPACITY:  # make room first: the peak stays at CAPACITY models
        _resident.popitem(last=False)
    from frpo_bench.models.loading import load_merged, torch_dtype
    model = load_merged(ref, merge_dtype or dtype)
    if merge_dtype and merge_dtype != dtype:
        model = model.to(torch_dtype(dtype))
    if attention != "sdpa":
        model.set_attn_implementation(attention)
    _resident[key] = model.eval()
    return model


def release() -> None:
    """Drop every resident model (before training, or at the end of a run) and free accelerator memory."""
    if not _resident:
        return
    _resident.clear()
    import gc
    gc.collect()
    from frpo_bench.models.device import empty_cache
    empty_cache()


def _version(ref: ModelRef) -> tuple:
    """Modification times of the files in the weight folders: a folder rewritten in place (a test's tmp
    dir, a user's local checkpoint) is loaded anew."""
    stamps = []
    for folder in (ref.path, ref.adapter):
        if folder and os.path.isdir(folder):
            stamps += sorted((entry.name, entry.stat().st_mtime_ns) for entry in os.scandir(folder) if entry.is_file())
    return tuple(stamps)
