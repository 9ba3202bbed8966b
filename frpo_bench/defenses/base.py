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

Report = Callable[[str], None]


class Defense(Protocol):
    Options: ClassVar[type[Options]]
    identity: ClassVar[bool]  # True: `apply` returns its input, so the defended model is the start itself

    def apply(self, model: ModelRef, out: Path, options: Options, seed: int, report: Report = print) -> ModelRef:
        """Train (or fetch) the defended model from `model` into the empty directory `out` and return it:
        full weights or an adapter inside `out`, or a model elsewhere. Deterministic given `seed`."""
        ...


# Optional part of a defense class, read through `registry.defense_repairs` (defenses without it act before the
# attack only, as every defense did before it):
#   repairs = True   a post-attack repair (e.g. SafeLoRA): with identity = True it changes nothing before the attack;
#                    after each attack that changes weights the engine plans a `repair` stage that calls
#                    repair(attacked, defended, base, out, options, report) -> ModelRef, where `defended` is the model
#                    the attack started from and `base` the model before alignment: its options' `base_model` (a model
#                    id, or None for the recipe's model before its `align` stage); the cell scores the repaired model
#                    (its attack stage is the one the undefended model's cell shares)

