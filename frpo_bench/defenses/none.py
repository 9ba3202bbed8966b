"""The undefended model, as the reference every defense is compared with."""
from __future__ import annotations

from pathlib import Path

from frpo_bench.defenses.base import DefenseBase
from frpo_bench.models import ModelRef
from frpo_bench.typed import NoOptions


class NoDefense(DefenseBase):
    """No hardening: the (aligned) base model itself."""

    Options = NoOptions
    identity = True

    def apply(self, model: ModelRef, out: Path, options, seed: int, report=print) -> ModelRef:
        return model
