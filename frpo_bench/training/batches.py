"""From (prompt, response) rows to padded training batches, and the peft config of a LoRA setting."""
from __future__ import annotations

import random

from frpo_bench.models.loading import chat_prompt


def tokenize_pairs(tokenizer, rows: list[dict], max_length: int, system: str | None = None) -> list[dict]:
    """Chat-templated (prompt, response) -> input_ids with labels masked (-100) on the prompt and on the system
    message: `system`, else the row's own (`system`), else none."""
    out = []
    for row in rows:
        row_system = system or row.get("system") or None
        opening = [{"role": "system", "content": row_system}] if row_system else []
        prompt = chat_prompt(tokenizer, row["prompt"], row_system)
        full = tokenizer.apply_chat_template(
            [*opening, {"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}],
            tokenize=False)
        if not full.startswith(prompt):  # templates that rewrite earlier turns: fall back to plain concatenation
            full = prompt + row["response"] + (tokenizer.eos_token or "")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        labels = [-100] * min(len(prompt_ids), len(ids)) + ids[len(prompt_ids):]
        if any(label != -100 for label in labels):
            out.append({"input_ids": ids, "labels": labels})
    return out


def same_prompt_pairs(first: list[dict], second: list[dict]) -> list[tuple[dict, dict]]:
    """(row of `first`, row of `second` with the same prompt) for each row of `first` that has one, in its order."""
    by_prompt = {row["prompt"]: row for row in second}
    return [(row, by_prompt[row["prompt"]]) for row in first if row["prompt"] in by_prompt]


def pad_batch(features: list[dict], pad_id: int) -> dict:
    import torch
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), -100, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def batches(features: list[dict], size: int, pad_id: int, seed: int):
    """An endless stream of padded batches, reshuffled every epoch."""
    for rows in row_batches(features, size, seed):
        yield pad_batch(rows, pad_id)


def row_batches(items: list, size: int, seed: int):
    """An endless stream of lists of `size` items, reshuffled every epoch (a short last list is dropped)."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(items)))
        rng.shuffle(order)
        for b in range(0, len(order) - size + 1 if len(order) >= size else 1, size):
            yield [items[i] for i in order[b: b + size]]


def linear_module_names(model) -> list[str]:
    """Names of the linear projections inside the transformer blocks (what 'all-linear' means)."""
    import torch
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and ".layers." in name})


def peft_config(lora, **extra):
    """peft's LoraConfig for a recipe's LoRA settings (rank, alpha, dropout, targets); `extra` adds
    peft arguments such as layers_to_transform."""
    from peft import LoraConfig
    targets = "all-linear" if lora.target_modules == ["all-linear"] else lora.target_modules
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets,
                      task_type="CAUSAL_LM", **extra)
