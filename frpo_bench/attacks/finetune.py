"""Fine-tuning attack: supervised fine-tuning on harmful or benign pairs, full weights or LoRA, at
each learning rate of the sweep (the training itself is `training.sft.finetune`, shared with the
demo's safety alignment)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from frpo_bench.training.options import FinetuneConfig
from frpo_bench.models import ModelRef


class FinetuneAttack:
    """Fine-tuning attack: SFT on harmful or benign pairs, full weights or LoRA, at each learning rate."""

    Options = FinetuneConfig

    def apply(self, model: ModelRef, out: Path, options: FinetuneConfig, lr: float, seed: int, report=print,
              checkpoint_steps=(), stop_at=None, warm=None) -> ModelRef:
        from frpo_bench.training.sft import WarmStart, finetune
        return finetune(model, out, options, lr=lr, seed=seed, report=report, checkpoint_steps=checkpoint_steps,
                        stop_at=stop_at, warm=warm or WarmStart())

    @staticmethod
    def generation(options: FinetuneConfig, gen):
        """An attack trained with a `system_prompt` is evaluated with it."""
        return replace(gen, system_prompt=options.system_prompt) if options.system_prompt else gen
