"""Losses shared by the trained defenses (RR's retain term, TAR's retain anchor, RepNoise's terms)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional


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


def layer_modules(lm, suffix: str, user: str) -> list:
    """Each decoder layer's submodule named `suffix` (e.g. mlp, self_attn), in layer order; an error naming `user`
    where the architecture's names do not give one per layer."""
    found = [m for name, m in lm.named_modules() if name.endswith(f".{suffix}") and ".layers." in name]
    if len(found) != lm.config.num_hidden_layers:
        raise ValueError(f"found {len(found)} '{suffix}' blocks for {lm.config.num_hidden_layers} layers: this "
                         f"architecture's names are not supported by {user}")
    return found


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
def captured_outputs(modules: list, shifts: Optional[list] = None, keep_grad: bool = False) -> Iterator[list]:
    """Within it, the list holds each module's hidden-state output of the last forward (the first element of a
    tuple output), in the order given; with `shifts`, each shift is added to that output; with `keep_grad`, the
    output keeps its gradient after backward (.grad)."""
    outputs: list = [None] * len(modules)

    def keeper(i):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if shifts is not None:
                hidden = hidden + shifts[i].to(hidden.dtype)
            if keep_grad and hidden.requires_grad:
                hidden.retain_grad()
            outputs[i] = hidden
            if shifts is not None:
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook

    handles = [m.register_forward_hook(keeper(i)) for i, m in enumerate(modules)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def causal_ce(lm, batch):
    """The mean CE of a padded batch's response tokens (labels -100 elsewhere): the model's own loss."""
    return lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
