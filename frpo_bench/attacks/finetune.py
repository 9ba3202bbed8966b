"""Fine-tuning attack: supervised fine-tuning on harmful or benign pairs, full weights or LoRA, at
each learning rate of the sweep (the training itself is `training.sft.finetune`, shared with the
demo's safety alignment)."""
from __future__ import annotations

from dataclasses import replace

from frpo_bench.attacks.base import FinetuneApply
from frpo_bench.training.options import FinetuneConfig


class FinetuneAttack(FinetuneApply):
    """Fine-tuning attack: SFT on harmful or benign pairs, full weights or LoRA, at each learning rate."""

    Options = FinetuneConfig

    @staticmethod
    def generation(options: FinetuneConfig, gen):
        """An attack trained with a `system_prompt` is evaluated with it."""
        return replace(gen, system_prompt=options.system_prompt) if options.system_prompt else gen
