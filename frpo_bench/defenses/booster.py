"""Booster (Huang et al., ICLR 2025; git-disl/Booster): alignment with a regularizer on how much one simulated
harmful fine-tuning step would lower the harmful loss.

With f the alignment loss (refusals and benign answers) and h the harmful loss (harmful answers), per step

    minimise  f(w) + lambda * (h(w) - h(w - alpha * g / ||g||)),   g = grad h(w)

the direction g / ||g|| held fixed (first order, as upstream): the update's gradient is
grad f(w) + lambda * (grad h(w) - grad h(w')), w' = w - alpha g / ||g||. The regularizer, h(w) - h(w'), is
the reduction of the harmful loss that the simulated step achieves; Booster trains it toward zero, so a
harmful step later has less to gain. The weights go back to w exactly before the update. Upstream trains a
LoRA adapter (r 32, alpha 4) at lr 5e-4, weight decay 0.1, batch 10, lambda 5, alpha 0.1.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from frpo_bench.data.ref import DataRef
from frpo_bench.defenses.base import DefenseBase
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.models.precision import Bf16Option, bf16_option
from frpo_bench.training.options import LoraConfig
from frpo_bench.typed import Options, check_positive, opt
from frpo_bench.work import Shape, Work, paired_training_work


@dataclass
class BoosterOptions(Bf16Option, Options):
    alignment: list[DataRef] = opt(help="alignment pairs: harmful requests with refusals (upstream: BeaverTails' "
                                        "safe answers), and benign pairs if wanted")
    harmful: list[DataRef] = opt(help="harmful requests with harmful answers: the simulated attacker's data")
    lam: float = opt(5.0, help="lambda, weight of the harmful-loss-reduction regularizer (upstream: 5)")
    alpha: float = opt(0.1, help="step size of the simulated harmful step along the normalised gradient "
                                 "(upstream: 0.1)")
    lr: float = opt(5e-4, help="learning rate (upstream: 5e-4, constant)")
    weight_decay: float = opt(0.1, help="AdamW weight decay (upstream: 0.1)")
    steps: int = opt(100, help="optimizer steps (upstream: 20 epochs of 5,000 rows at batch 10)")
    batch_size: int = opt(10, help="alignment rows per step, and harmful rows per step (upstream: 10 each)")
    max_length: int = opt(256, help="tokens per sequence")
    max_grad_norm: float = opt(1.0, help="gradient clipping norm (upstream: the HF Trainer's default, 1)")
    bf16: Union[bool, str] = bf16_option()
    lora: Optional[LoraConfig] = field(default_factory=lambda: LoraConfig(r=32, alpha=4), metadata={
        "help": "LoRA settings (upstream: r 32, alpha 4); null trains every weight"})

    def validate(self, path: str) -> None:
        self.check_bf16(path)
        check_positive(self, path, "alpha", "lr", "steps", "batch_size", "max_length", "max_grad_norm")
        for name in ("lam", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}", getattr(self, name), "must not be negative", "use e.g. 5 or 0.1")

    def data_refs(self) -> list[DataRef]:
        return [*self.alignment, *self.harmful]


def gradient_of(loss, params: list, backward) -> list:
    """d loss / d params (zeros where a parameter does not reach the loss), leaving .grad empty."""
    import torch
    for p in params:
        p.grad = None
    backward(loss)
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    return grads


def booster_gradients(lm, params: list, alignment_batch, harmful_batch, lam: float, alpha: float,
                      backward, autocast=nullcontext) -> dict:
    """Leave in each parameter's .grad the gradient of Booster's objective at the current weights, which are
    restored bit for bit after the simulated step; return f(w), h(w), h(w') and the regularizer h(w) - h(w')."""
    import torch

    from frpo_bench.training.losses import causal_ce as ce_loss
    with autocast():
        harmful = ce_loss(lm, harmful_batch)
    g = gradient_of(harmful, params, backward)
    norm = torch.sqrt(sum((x.float() ** 2).sum() for x in g)) + 1e-7
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, grad in zip(params, g):
            p.sub_(alpha * grad / norm)
    with autocast():
        stepped = ce_loss(lm, harmful_batch)
    g_stepped = gradient_of(stepped, params, backward)
    with torch.no_grad():
        for p, weights in zip(params, saved):
            p.copy_(weights)
    with autocast():
        alignment = ce_loss(lm, alignment_batch)
    backward(alignment)
    with torch.no_grad():
        for p, before, after in zip(params, g, g_stepped):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(lam * (before - after))
    return {"alignment_loss": alignment.item(), "harmful_loss": harmful.item(), "harmful_after_step": stepped.item(),
            "regularizer": harmful.item() - stepped.item(), "harmful_grad_norm": float(norm)}


class BoosterDefense(DefenseBase):
    """Booster: alignment that keeps a simulated harmful step from lowering the harmful loss."""

    Options = BoosterOptions

    @staticmethod
    def work(options, shape: Shape) -> Work:  # 3 forward-backward passes a step
        return paired_training_work(3, options.steps, options.batch_size, options.max_length, options.lora is not None)

    def apply(self, model: ModelRef, out: Path, options: BoosterOptions, seed: int, report=print) -> ModelRef:
        from frpo_bench.data import ref_rows
        from frpo_bench.training.batches import batches
        from frpo_bench.training.defense_loop import pair_features, start_run
        from frpo_bench.training.distributed import shard, to_device
        run = start_run(model, out, options.lora, options.lr, options.steps, seed, options.weight_decay, options.bf16)
        pad, rank, world = run.tokenizer.pad_token_id, run.accelerator.process_index, run.accelerator.num_processes
        streams = [shard(batches(pair_features(run.tokenizer, [r for ref in refs for r in ref_rows(ref)],
                                               options.max_length), options.batch_size, pad, seed + i), rank, world)
                   for i, refs in enumerate((options.alignment, options.harmful))]
        params = run.trainable()
        for step in range(1, options.steps + 1):
            alignment_batch, harmful_batch = (to_device(next(s), run.accelerator.device) for s in streams)
            losses = booster_gradients(run.lm, params, alignment_batch, harmful_batch, options.lam, options.alpha,
                                       run.accelerator.backward, run.autocast)
            run.accelerator.clip_grad_norm_(params, options.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad()
            run.log(step, losses, f"alignment {losses['alignment_loss']:.3f} harmful {losses['harmful_loss']:.3f} "
                                  f"reduction {losses['regularizer']:.4f}", report)
        return run.finish(model, out, {})
