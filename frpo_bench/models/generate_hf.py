"""Batched generation with transformers: left padding, batches sorted by length, KV cache, the prompts' shared
prefix computed once (models/shared_prefix.py)."""
from __future__ import annotations

import time
from typing import Callable, Sequence

from frpo_bench.models import ModelRef
from frpo_bench.models.loading import prompt_token_ids
from frpo_bench.models.resident import inference_model, inference_tokenizer
from frpo_bench.models.shared_prefix import batch_inputs, opening, repeated


class HFGenerator:
    """transformers generate(), batched; the portable default backend."""

    def __init__(self, report: Callable[[str], None] | None = None):
        self.report = report or (lambda msg: None)

    def generate(self, model: ModelRef, prompts: Sequence[str], cfg, seed: int = 0, prefills=None) -> list[str]:
        import torch
        tokenizer = inference_tokenizer(model, padding_side="left")
        # an adapter merged in float32, then cast: the weights lm-eval's `peft=` scores (and the model its
        # GSM8K stage then finds loaded)
        lm = inference_model(model, cfg.dtype, getattr(cfg, "attention", "sdpa"), merge_dtype="float32")
        ids, forced = prompt_token_ids(tokenizer, prompts, cfg.system_message(), prefills, getattr(cfg, "prefill_tokens", 0))
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch: little padding
        sampling = cfg.temperature > 0
        kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=sampling, pad_token_id=tokenizer.pad_token_id)
        if sampling:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        head, (prefix,) = opening([lm], ids, enabled=getattr(cfg, "prefix_cache", True))
        out: list[str] = [""] * len(ids)
        start, done, tokens = time.time(), 0, 0
        with torch.inference_mode():
            size = even_batch_size(len(order), cfg.batch_size)
            for b in range(0, len(order), size):
                idx = order[b: b + size]
                input_ids, mask = batch_inputs(head, [ids[i][len(head):] for i in idx], tokenizer.pad_token_id, lm.device)
                cache = {"past_key_values": repeated(prefix, len(idx))} if prefix is not None else {}
                generated = lm.generate(input_ids=input_ids, attention_mask=mask, **cache, **kwargs)
                new = generated[:, input_ids.shape[1]:]
                tokens += int((new != tokenizer.pad_token_id).sum())
                for i, row in zip(idx, new.tolist()):
                    out[i] = tokenizer.decode(forced[i] + row, skip_special_tokens=True).strip()
                done += len(idx)
                self.report(f"generated {done}/{len(ids)} ({time.time() - start:.0f}s)")
        if lm.device.type == "cpu":
            from frpo_bench.models.backend_choice import parameters, record_generation
            record_generation("hf", cfg.dtype, parameters(model.path), tokens, time.time() - start)
        return out


def even_batch_size(n: int, most: int) -> int:
    """The batch size that splits n prompts into as few batches as `most` allows, evenly: 100 at most 48 ->
    34, 33, 33 instead of 48, 48, 4 (a last batch of 4 still pays every decoding step: 6.9 -> 6.3 s here)."""
    batches = -(-n // most) if n else 1
    return max(1, -(-n // batches))
