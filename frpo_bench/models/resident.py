"""Inference models and their tokenizers kept loaded between the stages of one process.

A cell's generation stages (one per prompt set) and its scoring stages (lm-eval, KL) read the same
weights one after another, and every KL of an attack sweep reads the same starting model: here a
load of the 135M demo model costs ~1 s a stage, a 7B one on a GPU much more. The last `CAPACITY`
models stay resident (within half the device's memory), keyed by what makes their weights (the artifact, its files' modification
times, the dtype the adapter was merged in, the compute dtype) and the attention kernel. Callers
must not modify what they get (no .to(), no training); the runner releases them before training.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from frpo_bench.models import ModelRef

# what a tokenizer is read from (AutoTokenizer reads config.json for the class when tokenizer_config names none)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "config.json")
TOKENIZERS_KEPT = 4
CAPACITY = 3  # a cell's generation model and KL's two (the model and the one before the attack, shared by a sweep)
MEMORY_SHARE = 0.5  # and no more than half the device's memory (host RAM on a CPU) in resident weights
_resident: "OrderedDict[tuple, object]" = OrderedDict()
_tokenizers: "OrderedDict[tuple, object]" = OrderedDict()


def inference_tokenizer(ref: ModelRef, padding_side: str = "left"):
    """The model's tokenizer (models/loading.load_tokenizer), loaded once per process for the same tokenizer files:
    keyed by their content, since every attacked copy of a model saves the same ones. A load costs 0.3-0.4 s on a
    2-core CPU, and a demo run on the resident engine made 84 of them (36 s of its 490 s of generate + score).
    Shared: callers must not modify it (training, which may, loads its own)."""
    key = (tokenizer_digest(ref.path), ref.trust_remote_code, padding_side)
    if key not in _tokenizers:
        from frpo_bench.models.loading import load_tokenizer
        _tokenizers[key] = load_tokenizer(ref, padding_side)
        while len(_tokenizers) > TOKENIZERS_KEPT:
            _tokenizers.popitem(last=False)
    _tokenizers.move_to_end(key)
    return _tokenizers[key]


def tokenizer_digest(path: str) -> str:
    """The tokenizer files in a weight folder, each by its SHA-256; a Hub id (no folder) stands for itself."""
    from frpo_bench.files import sha256_file
    if not os.path.isdir(path):
        return f"id:{path}"
    return " ".join(f"{name}:{sha256_file(Path(path, name))}" for name in TOKENIZER_FILES
                    if os.path.isfile(os.path.join(path, name)))


def inference_model(ref: ModelRef, dtype: str, attention: str = "sdpa", merge_dtype: str | None = None):
    """The merged model in eval mode: an adapter merged in `merge_dtype` (default: `dtype`), then cast to
    `dtype`, with the attention kernel set; loaded once while it stays among the recently used."""
    merge_dtype = (merge_dtype or dtype) if ref.adapter else dtype  # full weights: loading in dtype is the same cast
    key = (ref, _version(ref), merge_dtype, dtype, attention)
    if key in _resident:
        _resident.move_to_end(key)
        return _resident[key]
    from frpo_bench.models.loading import load_merged, torch_dtype
    model = load_merged(ref, merge_dtype)
    if merge_dtype != dtype:
        model = model.to(torch_dtype(dtype))
    if attention != "sdpa":
        if attention == "grouped":
            from frpo_bench.models.grouped_attention import register
            register()
        model.set_attn_implementation(attention)
    _resident[key] = model.eval()
    budget = MEMORY_SHARE * _device_memory()
    while len(_resident) > 1 and (len(_resident) > CAPACITY or sum(map(_bytes, _resident.values())) > budget):
        _resident.popitem(last=False)  # least recently used first; a caller still holding it keeps it alive
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


def _bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _device_memory() -> int:
    from frpo_bench.models.device import on_accelerator
    if on_accelerator():
        import torch
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
