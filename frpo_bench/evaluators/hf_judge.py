"""Judge models run locally through transformers: a causal LM (optionally with a LoRA, through peft)
read at its next token, or a sequence-classification reward model read at its logit.

Models load by Hub id (pinned revision) or local path, safetensors only, remote code off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class JudgeModel:
    model: str
    revision: Optional[str] = None
    adapter: Optional[str] = None  # LoRA (Hub id or path) applied on `model`
    adapter_revision: Optional[str] = None
    dtype: str = "float32"
    pad: str = "eos"  # a tokenizer without a pad token pads with: eos, or new (a <|pad|> token, embeddings resized)

    def describe(self) -> str:
        name = f"{self.model}@{self.revision or 'default'}"
        return name + (f"+{self.adapter}@{self.adapter_revision or 'default'}" if self.adapter else "")


PAD_CHOICES = ("eos", "new")
NEW_PAD = "<|pad|>"


def _tokenizer(judge: JudgeModel, padding_side: str):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(judge.model, revision=judge.revision)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        if judge.pad == "new":  # the FRPO reference's reward model: its own pad token, never a real one
            tokenizer.add_special_tokens({"pad_token": NEW_PAD})
        else:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_judge(judge: JudgeModel):
    from transformers import AutoModelForCausalLM

    from frpo_bench.models.loading import contiguous_head_input, torch_dtype
    tokenizer = _tokenizer(judge, padding_side="left")  # the next token after every prompt sits at position -1
    from frpo_bench.models.device import device_map
    model = AutoModelForCausalLM.from_pretrained(judge.model, revision=judge.revision, dtype=torch_dtype(judge.dtype),
                                                 use_safetensors=True, device_map=device_map())
    contiguous_head_input(model)
    if judge.adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, judge.adapter, revision=judge.adapter_revision)
    return tokenizer, model.eval()


def next_token_probs(tokenizer, model, prompts: Sequence[str], token_ids: Sequence[int], batch_size: int = 4,
                     add_special_tokens: bool = True) -> list[list[float]]:
    """For each prompt, the probabilities of `token_ids` as its next token, renormalised over them."""
    import torch
    out = []
    with torch.inference_mode():
        for b in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[b: b + batch_size]), return_tensors="pt", padding=True,
                              add_special_tokens=add_special_tokens).to(model.device)
            logits = model(**batch).logits[:, -1, :].float()
            out += logits[:, list(token_ids)].softmax(dim=-1).tolist()
    return out


def greedy_next_token(tokenizer, model, prompts: Sequence[str], batch_size: int = 4,
                      add_special_tokens: bool = True) -> list[str]:
    """The greedy first generated token of each prompt, decoded (HarmBench reads one token)."""
    import torch
    out = []
    with torch.inference_mode():
        for b in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[b: b + batch_size]), return_tensors="pt", padding=True,
                              add_special_tokens=add_special_tokens).to(model.device)
            ids = model(**batch).logits[:, -1, :].argmax(dim=-1).tolist()
            out += [tokenizer.decode([i], skip_special_tokens=True) for i in ids]
    return out


def single_token_id(tokenizer, text: str) -> int:
    """The id of `text` as one token (how "1".."5" are read); an error if the tokenizer splits it."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"the judge tokenizer splits {text!r} into {len(ids)} tokens; it must be one")
    return ids[0]


class RewardModel:
    """sigmoid(logit) of a sequence-classification reward model on (user, assistant) chats; loads once."""

    def __init__(self, judge: JudgeModel, batch_size: int = 4):
        self.judge, self.batch_size = judge, batch_size
        self.tokenizer = self.model = None

    def load(self) -> "RewardModel":
        from transformers import AutoModelForSequenceClassification

        from frpo_bench.models.loading import torch_dtype
        self.tokenizer = _tokenizer(self.judge, padding_side="right")
        from frpo_bench.models.device import device_map
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.judge.model, revision=self.judge.revision, num_labels=1, dtype=torch_dtype(self.judge.dtype),
            use_safetensors=True, device_map=device_map()).eval()
        if len(self.tokenizer) > self.model.get_input_embeddings().num_embeddings:  # a new pad token was added
            self.model.resize_token_embeddings(len(self.tokenizer))
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        return self

    def scores(self, chats: list[list[dict]]) -> list[float]:
        import torch
        if self.model is None:
            self.load()
        texts = [self.tokenizer.apply_chat_template(chat, tokenize=False) for chat in chats]
        out = []
        with torch.inference_mode():
            for b in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[b: b + self.batch_size], return_tensors="pt", padding=True,
                                       add_special_tokens=False).to(self.model.device)
                out += [sigmoid(x) for x in self.model(**batch).logits[:, 0].float().tolist()]
        return out


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))
