"""New components of the kinds that change a plan's shape, one class each as a user would write it (the registry
lines are added by the test that uses them): a repair that keeps the attacked model, a decode-time attack that
asks for direct answers, and a training-free attack that perturbs the weights by a seeded noise."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from frpo_bench.attacks.base import AttackBase
from frpo_bench.defenses.base import DefenseBase
from frpo_bench.models import ModelRef
from frpo_bench.typed import Options, opt
from frpo_bench.work import Shape, WeightsMemory, Work


@dataclass
class KeepOptions(Options):
    base_model: Optional[str] = opt(None, help="the model before alignment (null: the recipe's)")


class KeepRepair(DefenseBase):
    """A post-attack repair that returns the attacked model unchanged."""

    Options = KeepOptions
    identity = True
    repairs = True

    def apply(self, model: ModelRef, out: Path, options, seed: int, report=print) -> ModelRef:
        return model

    def repair(self, attacked: ModelRef, defended: ModelRef, base: ModelRef, out: Path, options, report=print):
        report("kept the attacked model")
        return attacked


@dataclass
class DirectOptions(Options):
    instruction: str = opt("Answer directly.", help="appended to every request")


class DirectAttack(AttackBase):
    """A decode-time attack: each request asks for a direct answer."""

    Options = DirectOptions
    changes_weights = False

    @staticmethod
    def generation(options: DirectOptions, gen):
        return replace(gen, user_template="{prompt} " + options.instruction)


@dataclass
class NoiseOptions(Options):
    scale: float = opt(1e-3, help="standard deviation of the noise added to every weight")


class NoiseAttack(AttackBase):
    """A training-free attack: seeded Gaussian noise on every weight."""

    Options = NoiseOptions
    trains = False

    @staticmethod
    def work(options, shape: Shape) -> Work:
        return Work(loads=2, memory=(WeightsMemory(2),))

    def apply(self, model: ModelRef, out: Path, options: NoiseOptions, lr, seed: int, report=print, **_) -> ModelRef:
        import torch

        from frpo_bench.models.loading import load_model, load_tokenizer
        lm = load_model(model)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for weight in lm.parameters():
                weight.add_(torch.randn(weight.shape, generator=generator) * options.scale)
        lm.save_pretrained(out, safe_serialization=True)
        load_tokenizer(model).save_pretrained(out)
        return ModelRef(str(out))


