"""Losses shared by the trained defenses (RR's retain term, TAR's retain anchor, RepNoise's terms)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


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


def response_ce(logits, labels):
    """Mean next-token cross-entropy over the response tokens (labels != -100); logits [B, T, V]."""
    import torch
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                             ignore_index=-100)


def gaussian_mmd(x, y, kernel_mul: float = 2.0, kernel_num: int = 5):
    """Squared MMD between the rows of x and of y ([N, D] and [M, D]) under a sum of `kernel_num` Gaussian
    kernels exp(-||a - b||^2 / s), the bandwidths s spaced by `kernel_mul` around the mean pairwise squared
    distance of the pooled rows (taken without gradient; RepNoise's kernel). The mean of K_xx + K_yy - K_xy - K_yx
    over the pooled matrix, as upstream computes it (equal sizes)."""
    import torch
    pooled = torch.cat([x, y]).float()
    n = pooled.shape[0]
    distances = torch.cdist(pooled, pooled, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    centre = distances.detach().sum() / (n * n - n) / kernel_mul ** (kernel_num // 2)
    kernel = sum(torch.exp(-distances / (centre * kernel_mul ** i)) for i in range(kernel_num))
    k = x.shape[0]
    return (kernel[:k, :k].mean() + kernel[k:, k:].mean() - kernel[:k, k:].mean() - kernel[k:, :k].mean())


def head_ce(head, hidden, labels):
    """Next-token CE of the response tokens read from `hidden` ([B, T, D]) by `head` (a norm and the
    unembedding): only the positions that predict a response token reach the head (a 49k-word vocabulary
    at every layer would not fit otherwise)."""
    import torch
    predicts = labels[:, 1:] != -100
    return torch.nn.functional.cross_entropy(head(hidden[:, :-1][predicts]).float(), labels[:, 1:][predicts])


@contextmanager
def captured_outputs(modules: list) -> Iterator[list]:
    """Within it, the list holds each module's output of the last forward, in the order given."""
    outputs: list = [None] * len(modules)

    def keeper(i):
        def hook(module, args, output):
            outputs[i] = output
        return hook

    handles = [m.register_forward_hook(keeper(i)) for i, m in enumerate(modules)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def causal_ce(lm, batch):
    """The response CE of a padded batch (input_ids, attention_mask, labels) under `lm`."""
    return response_ce(lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
