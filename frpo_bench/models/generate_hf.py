"""Batched generation with transformers: left padding, batches sorted by length, KV cache."""
from __future__ import annotations

import time
from typing import Callable, Sequence

from frpo_bench.models import ModelRef
from frpo_bench.models.loading import chat_prompt, load_tokenizer
from frpo_bench.models.resident import inference_model


class HFGenerator:
    """transformers generate(), batched; the portable default backend."""

    def __init__(self, report: Callable[[str], None] | None = None):
        self.report = report or (lambda msg: None)

    def generate(self, model: ModelRef, prompts: Sequence[str], cfg, seed: int = 0) -> list[str]:
        import torch
        tokenizer = load_tokenizer(model, padding_side="left")
        lm = inference_model(model, cfg.dtype, getattr(cfg, "attention", "sdpa"))
        texts = [chat_prompt(tokenizer, p, cfg.system_prompt) for p in prompts]
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # similar lengths share a batch: little padding
        sampling = cfg.temperature > 0
        kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=sampling, pad_token_id=tokenizer.pad_token_id)
        if sampling:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        out: list[str] = [""] * len(texts)
        start, done = time.time(), 0
        with torch.inference_mode():
            for b in range(0, len(order), cfg.batch_size):
                idx = order[b: b + cfg.batch_size]
                batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                                  add_special_tokens=False).to(lm.device)
                generated = lm.generate(**batch, **kwargs)
                new = generated[:, batch["input_ids"].shape[1]:]
                for i, row in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
                    out[i] = row.strip()
                done += len(idx)
                self.report(f"generated {done}/{len(texts)} ({time.time() - start:.0f}s)")
        return out
