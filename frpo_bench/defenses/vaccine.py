"""Vaccine (Huang et al., NeurIPS 2024; git-disl/Vaccine): perturbation-aware alignment.

Per step, on a batch of alignment pairs (refusals of harmful requests, benign answers):
  1. forward and backward the alignment loss, keeping the gradient G_l of the loss with respect to the output
     of each layer's attention block (the hidden states it adds to the residual stream);
  2. the perturbation that raises the loss most within a ball of radius rho: e_l = rho * G_l / ||G||, the norm
     taken over every layer together;
  3. forward the same batch again with e_l added to each attention output, and take the optimizer step on
     that loss's gradient (the first pass's gradient is discarded).
Trained this way, the alignment holds when later fine-tuning drifts the embeddings. Upstream trains a LoRA
adapter (r 32, alpha 4) at lr 5e-4 with weight decay 0.1, batch 10; Booster's baseline script uses rho 5.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from frpo_bench.data.ref import DataRef
from frpo_bench.defenses.base import DefenseBase
from frpo_bench.models import ModelRef
from frpo_bench.models.precision import Bf16Option, bf16_option
from frpo_bench.training.options import LoraConfig
from frpo_bench.typed import Options, check_positive, opt
from frpo_bench.work import Shape, Work, paired_training_work


@dataclass
class VaccineOptions(Bf16Option, Options):
    alignment: list[DataRef] = opt(help="alignment pairs: harmful requests with refusals (upstream: BeaverTails' "
                                        "safe answers), and benign pairs if wanted")
    rho: float = opt(5.0, help="radius of the hidden-state perturbation, over all layers together (Booster's "
                               "baseline script: 5)")
    lr: float = opt(5e-4, help="learning rate (upstream: 5e-4, constant)")
    weight_decay: float = opt(0.1, help="AdamW weight decay (upstream: 0.1)")
    steps: int = opt(100, help="optimizer steps (upstream: 20 epochs of 5,000 rows at batch 10)")
    batch_size: int = opt(10, help="rows per step (upstream: 10)")
    max_length: int = opt(256, help="tokens per sequence")
    max_grad_norm: float = opt(1.0, help="gradient clipping norm (upstream: the HF Trainer's default, 1)")
    bf16: Union[bool, str] = bf16_option()
    lora: Optional[LoraConfig] = field(default_factory=lambda: LoraConfig(r=32, alpha=4), metadata={
        "help": "LoRA settings (upstream: r 32, alpha 4); null trains every weight"})

    def validate(self, path: str) -> None:
        self.check_bf16(path)
        check_positive(self, path, "rho", "lr", "steps", "batch_size", "max_length", "max_grad_norm")

    def data_refs(self) -> list[DataRef]:
        return list(self.alignment)


def attention_blocks(lm) -> list:
    """Each decoder layer's attention block, whose output Vaccine perturbs."""
    from frpo_bench.training.losses import layer_modules
    return layer_modules(lm, "self_attn", "vaccine")


def worst_case_shifts(gradients: list, rho: float) -> list:
    """rho * G_l / ||G||, the norm over every layer's gradient together."""
    import torch
    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in gradients)) + 1e-7
    return [(rho * g / norm).detach() for g in gradients]


def vaccine_gradients(lm, blocks: list, batch, rho: float, backward, autocast=nullcontext) -> dict:
    """Leave in .grad the gradient of the alignment loss under the worst-case shift of the attention outputs;
    return both losses and the shifts."""
    from frpo_bench.training.losses import captured_outputs
    from frpo_bench.training.losses import causal_ce as ce_loss
    with autocast(), captured_outputs(blocks, keep_grad=True) as outputs:
        plain = ce_loss(lm, batch)
    backward(plain)
    shifts = worst_case_shifts([o.grad for o in outputs], rho)
    lm.zero_grad(set_to_none=True)
    with autocast(), captured_outputs(blocks, shifts):
        perturbed = ce_loss(lm, batch)
    backward(perturbed)
    return {"loss": plain.item(), "perturbed_loss": perturbed.item(), "shifts": shifts}


class VaccineDefense(DefenseBase):
    """Vaccine: alignment trained under the worst-case perturbation of each layer's attention output."""

    Options = VaccineOptions

    @staticmethod
    def work(options, shape: Shape) -> Work:  # 2 forward-backward passes a step
        return paired_training_work(2, options.steps, options.batch_size, options.max_length, options.lora is not None)

    def apply(self, model: ModelRef, out: Path, options: VaccineOptions, seed: int, report=print) -> ModelRef:
        from frpo_bench.data import ref_rows
        from frpo_bench.training.batches import batches
        from frpo_bench.training.defense_loop import pair_features, start_run
        from frpo_bench.training.distributed import shard, to_device
        run = start_run(model, out, options.lora, options.lr, options.steps, seed, options.weight_decay, options.bf16)
        features = pair_features(run.tokenizer, [r for ref in options.alignment for r in ref_rows(ref)],
                                 options.max_length)
        stream = shard(batches(features, options.batch_size, run.tokenizer.pad_token_id, seed),
                       run.accelerator.process_index, run.accelerator.num_processes)
        blocks = attention_blocks(run.model)
        for step in range(1, options.steps + 1):
            result = vaccine_gradients(run.lm, blocks, to_device(next(stream), run.accelerator.device), options.rho,
                                       run.accelerator.backward, run.autocast)
            run.accelerator.clip_grad_norm_(run.trainable(), options.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad()
            run.log(step, {"loss": result["loss"], "perturbed_loss": result["perturbed_loss"]},
                    f"loss {result['loss']:.3f} perturbed {result['perturbed_loss']:.3f}", report)
        return run.finish(model, out, {})
