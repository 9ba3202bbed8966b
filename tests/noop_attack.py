"""A new attack in one file (the registry line is added by the test that uses it): it takes options of
its own and returns the defended model unchanged, so an attack cell equals its unattacked one."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from frpo_bench.attacks.base import AttackBase
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.typed import Options, opt


@dataclass
class NoOpOptions(Options):
    note: str = opt("nothing", help="a label that enters the cache key")
    repeats: int = opt(1, help="how many times to do nothing")
    log_every: int = opt(1, help="transport only: never in the key")

    def validate(self, path: str) -> None:
        if self.repeats < 0:
            raise ConfigError(f"{path}.repeats", self.repeats, "is negative", "use 0 or more")

    def key_fields(self) -> dict:
        return {"note": self.note, "repeats": self.repeats}


class NoOpAttack(AttackBase):
    """Does nothing, with options."""

    Options = NoOpOptions

    def apply(self, model: ModelRef, out: Path, options: NoOpOptions, lr: float, seed: int, report=print) -> ModelRef:
        report(f"did nothing {options.repeats} time(s): {options.note}")
        return model
