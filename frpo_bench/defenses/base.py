"""The contract of a defense: base model -> defended model.

A defense is one file with a class registered in `registry.DEFENSES`. It declares its `Options`
(a `typed.Options` dataclass, or `typed.NoOptions`) and whether it is the identity (no stage is
planned for it), and implements one verb, `apply`. Everything it reads from the recipe comes
through its options: `key_fields()` (what enters the cache key), `data_refs()` (data resolved and
hashed before compute), `preflight()` (outside checks before compute), `validate()` (values).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, Protocol

from frpo_bench.models import ModelRef
from frpo_bench.typed import Options
from frpo_bench.work import Shape, WeightsMemory, Work

Report = Callable[[str], None]


class Defense(Protocol):
    Options: ClassVar[type[Options]]
    identity: ClassVar[bool]  # True: `apply` returns its input, so the defended model is the start itself

    def apply(self, model: ModelRef, out: Path, options: Options, seed: int, report: Report = print) -> ModelRef:
        """Train (or fetch) the defended model from `model` into the empty directory `out` and return it:
        full weights or an adapter inside `out`, or a model elsewhere. Deterministic given `seed`."""
        ...


class DefenseBase:
    """What every defense class inherits: the engine reads these, and a defense overrides the ones that differ."""

    identity: ClassVar[bool] = False  # True: `apply` returns its input, so the defended model is the start itself
    repairs: ClassVar[bool] = False  # True: a post-attack repair (e.g. SafeLoRA; with identity = True it changes
    # nothing before the attack): after each attack that changes weights the engine plans a `repair` stage that
    # calls repair(attacked, defended, base, out, options, report) -> ModelRef, where `defended` is the model the
    # attack started from and `base` the model before alignment (its options' `base_model`, or None for the
    # recipe's model before its `align` stage); the cell scores the repaired model

    @staticmethod
    def work(options: Options, shape: Shape) -> Work:
        """What its harden stage does, for the cost model (frpo_bench/work.py): by default it reads the model
        and writes the defended one (a released checkpoint), without training."""
        return Work(loads=2, memory=(WeightsMemory(1),))

    @staticmethod
    def repair_work(options: Options, shape: Shape) -> Work:
        """What its repair stage does: it reads the attacked, defended and base weights."""
        return Work(loads=3, memory=(WeightsMemory(3),))
