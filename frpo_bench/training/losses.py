"""Representation losses shared by the trained defenses (RR's retain term, TAR's retain anchor)."""
from __future__ import annotations


def hidden_states(model, batch, layers=None):
    """The model's hidden states, stacked: [L, B, T, D] (all of them, or those at `layers`)."""
    import torch
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    states = out.hidden_states if layers is None else [out.hidden_states[i] for i in layers]
    return torch.stack(list(states))


def representation_distance(h_lora, h_orig, mask, relative: bool = False):
    """Masked mean over layers and tokens of || h_lora - h_orig ||_2 (divided by || h_orig ||_2 when
    relative); h: [L, B, T, D], mask: [B, T]."""
    distance = (h_lora.float() - h_orig.float()).norm(dim=-1)
    if relative:
        distance = distance / h_orig.float().norm(dim=-1).clamp(min=1e-6)
    weights = mask.unsqueeze(0).expand_as(distance).float()
    return (distance * weights).sum() / weights.sum()
