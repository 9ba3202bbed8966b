"""The contract of an attack: defended model -> attacked model, at one learning rate of a sweep.

An attack is one file with a class registered in `registry.ATTACKS`. It declares its `Options`
(a `typed.Options` dataclass: the recipe's `attacks[i].options`) and implements one verb, `apply`.
The engine reads the options only through `key_fields()`, `data_refs()`, `preflight()` and
`validate()`; the attack's name and learning rates are the recipe's, not the attack's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, Optional, Protocol, Sequence

from frpo_bench.models import ModelRef
from frpo_bench.typed import Options
from frpo_bench.work import Shape, WeightsMemory, Work

Report = Callable[[str], None]

class Attack(Protocol):
    Options: ClassVar[type[Options]]

    def apply(self, model: ModelRef, out: Path, options: Options, lr: float, seed: int,
              report: Report = print, checkpoint_steps: Sequence[int] = (), stop_at: Optional[int] = None,
              warm=None) -> ModelRef:
        """Attack `model` at learning rate `lr` into the empty directory `out` and return the attacked model
        (full weights or an adapter inside `out`). Deterministic given `seed`. For a trajectory, the model
        after each optimizer step in `checkpoint_steps` is kept too, its record written with
        `models.artifact.write_model(out, ref, models.artifact.checkpoint_record(step))` (only attacks whose options
        give `planned_steps()` are asked). With `stop_at` (a search's rung), training stops after that step of
        the same planned run (same schedule), and the model then is the one returned. `warm`
        (training.sft.WarmStart, given with `stop_at` or to the run after one) says where to keep the trainer state
        at the stop and which earlier stop's state to resume from; an attack that cannot resume trains from step 0
        (the result must be the same either way)."""
        ...


class AttackBase:
    """What every attack class inherits: the engine reads these, and an attack overrides the ones that differ."""

    trains: ClassVar[bool] = True  # False: no learning rates (`lrs`), one cell per defended model and seed,
    # `apply` called with lr=None (e.g. refusal_ablation)
    changes_weights: ClassVar[bool] = True  # False: it acts at decoding time only (e.g. prefill; implies no
    # training): no attack stage and no `apply`; its cells are the defended model evaluated with the generation
    # settings `generation` returns, so what those leave as they were (benign sets, capability scored on the
    # model itself) is shared with the unattacked cell's stages, not recomputed

    @staticmethod
    def generation(options: Options, gen):
        """The GenerationConfig its cells are evaluated with, from the recipe's (e.g. an identity-shift attack's
        system prompt and request wrapper); it enters the generation's key like any generation setting."""
        return gen

    @staticmethod
    def prompt_generation(options: Options, gen, prompts):
        """The settings one prompt set of its cells is generated with, from `generation`'s (None: the set is left
        out of its cells); checked before compute."""
        return gen

    @staticmethod
    def work(options: Options, shape: Shape) -> Work:
        """What its stage does, for the cost model (frpo_bench/work.py): by default it loads the model to
        change it and writes it back, without training."""
        return Work(loads=2, memory=(WeightsMemory(1),))


def evaluation_generation(attack_class: type[AttackBase], options: Options, gen):
    """The generation settings the attack's cells are evaluated with (the recipe's unless it changes them)."""
    return attack_class.generation(options, gen)


def prompt_set_generation(attack_class: type[AttackBase], options: Options):
    """The attack's rule for each prompt set of its cells, as a function of (settings, prompts)."""
    return lambda gen, prompts: attack_class.prompt_generation(options, gen, prompts)


class FinetuneApply(AttackBase):
    """`apply` of an attack whose options are a `training.options.FinetuneConfig`: the shared SFT trainer, with
    trajectory checkpoints, a search rung's stop and its warm start (the fine-tuning and identity-shift attacks)."""

    @staticmethod
    def work(options, shape: Shape) -> Work:
        return options.sft_work()

    def apply(self, model: ModelRef, out: Path, options: Options, lr: float, seed: int, report: Report = print,
              checkpoint_steps: Sequence[int] = (), stop_at: Optional[int] = None, warm=None) -> ModelRef:
        from frpo_bench.training.sft import WarmStart, finetune
        return finetune(model, out, options, lr=lr, seed=seed, report=report, checkpoint_steps=checkpoint_steps,
                        stop_at=stop_at, warm=warm or WarmStart())
