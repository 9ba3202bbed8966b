"""`attention: grouped`: transformers' eager attention without copying the key/value heads.

Grouped-query models (SmolLM2-135M: 9 query heads over 3 key/value heads) have their key and value heads
repeated to every query head before eager's two matmuls, a copy of the whole KV cache per layer and decode
step. Here the query heads of a group are stacked instead, so each key/value head is read where it lies:
the same products, the same fp32 softmax and the same casts as eager, in one matmul per group (rounding as
a matmul of other shapes gives it; tested against eager). Registered with transformers under the name
`grouped`, with eager's additive mask.
"""
from __future__ import annotations

NAME = "grouped"


def grouped_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0,
                              **kwargs):
    """query [batch, heads, q, dim], key/value [batch, kv_heads, kv, dim] -> ([batch, q, heads, dim], None)."""
    import torch
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scaling = dim ** -0.5 if scaling is None else scaling
    # head h = k * group + g reads key/value head k (as transformers' repeat_kv lays them out)
    stacked = query.reshape(batch, kv_heads, group * q_len, dim)
    scores = torch.matmul(stacked, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        mask = attention_mask[:, :, :, :kv_len].unsqueeze(2)  # [batch, 1, 1, q, kv] against [.., group, q, kv]
        scores = scores.view(batch, kv_heads, group, q_len, kv_len)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
        scores = scores.view(batch, kv_heads, group * q_len, kv_len)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout and module.training:
        weights = torch.nn.functional.dropout(weights, p=dropout)
    out = torch.matmul(weights, value).view(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `grouped` an attention implementation transformers knows (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    AttentionInterface.register(NAME, grouped_attention_forward)
    AttentionMaskInterface.register(NAME, eager_mask)
