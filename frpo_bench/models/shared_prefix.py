"""The prompts of a set share their opening tokens (the chat template's system turn and the start of the
user turn: 24 of SmolLM2's ~50 prompt tokens): compute that prefix's keys and values once and start every
batch from a copy, instead of running it once per prompt. On this project's 2-core CPU, prompt processing
was ~45% of HF generation's time. In exact arithmetic the results are those of the whole prompt; in
floating point they differ like another batch size does (the parity test compares fp32 greedy outputs).

The layout a batch is given: [shared prefix | left padding | rest of each prompt]. transformers derives
position ids from the attention mask (cumulative sum), so padding in the middle is skipped: every row's
rest continues at the prefix's length, as it would without padding.
"""
from __future__ import annotations

import copy
from typing import Sequence

MIN_SHARED = 8  # tokens: below this the copy costs about what it saves


def shared_length(token_lists: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix, leaving every list at least one token of its own (the
    last prompt token's position yields the first prediction)."""
    if not token_lists:
        return 0
    limit = min(len(ids) for ids in token_lists) - 1
    first, n = token_lists[0], 0
    while n < limit and all(ids[n] == first[n] for ids in token_lists):
        n += 1
    return n


def prefix_cache(model, prefix_ids: Sequence[int]):
    """The model's KV cache after the prefix (batch 1), or None where the model's cache cannot be copied
    and repeated along the batch (recurrent or sliding-window caches): then prompts run whole."""
    import torch
    from transformers import DynamicCache
    with torch.inference_mode():
        ids = torch.tensor([list(prefix_ids)], device=model.device)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    if type(cache) is not DynamicCache or any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", [])):
        return None
    return cache


def opening(models: Sequence, token_lists: Sequence[Sequence[int]], enabled: bool = True):
    """The shared opening of the token lists and each model's KV cache after it: (prefix ids, caches).
    ([], [None, ...]) where sharing is off, the opening is shorter than MIN_SHARED, or any model's cache
    cannot be copied (then every prompt runs whole, for all models alike)."""
    shared = shared_length(token_lists) if enabled else 0
    if shared < MIN_SHARED:
        return [], [None] * len(models)
    head = list(token_lists[0][:shared])
    caches = [prefix_cache(model, head) for model in models]
    if any(cache is None for cache in caches):
        return [], [None] * len(models)
    return head, caches


def batch_inputs(prefix_ids: Sequence[int], rests: Sequence[Sequence[int]], pad_id: int, device):
    """input_ids and attention_mask of [prefix | left padding | rest] for each row."""
    import torch
    width = max(len(r) for r in rests)
    ids = torch.full((len(rests), len(prefix_ids) + width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[:, : len(prefix_ids)] = torch.tensor(list(prefix_ids))
    mask[:, : len(prefix_ids)] = 1
    for i, rest in enumerate(rests):
        if rest:
            ids[i, ids.shape[1] - len(rest):] = torch.tensor(list(rest))
            mask[i, ids.shape[1] - len(rest):] = 1
    return ids.to(device), mask.to(device)


def repeated(cache, batch: int):
    """A copy of a batch-1 cache for `batch` rows (generation appends to it)."""
    copied = copy.deepcopy(cache)
    copied.batch_repeat_interleave(batch)
    return copied
