"""Expected seconds of a stage from the store's own history: every finished stage records its kind,
device, seconds and size (stage.json), so a new stage of the same sort on the same device is
estimated by the median seconds per unit of size of those records, times its own size. The stage
table's priors (one 2-core CPU's) serve only where the store has no record."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from frpo_bench.engine.stages import Stage, prior_seconds, stage_size


def sort_of(kind: str, fields: dict) -> tuple:
    """Stages whose cost per unit of size is comparable: the same kind and evaluator, defense type or
    LoRA-versus-full training."""
    if kind == "score":
        return kind, fields.get("evaluator")
    if kind == "harden":
        return kind, fields.get("type")
    if kind in ("align", "attack"):
        return kind, "lora" if fields.get("lora") else "full"
    return (kind,)


def units(size: dict) -> float:
    """The product of a stage's size measures (steps x batch x length, prompts x new tokens, ...)."""
    total = 1.0
    for value in size.values():
        if isinstance(value, (int, float)) and value > 0:
            total *= value
    return total


class History:
    """Seconds per unit of size, by (sort, device), from the stage.json records under a store."""

    def __init__(self, rates: dict[tuple, list[float]] | None = None):
        self.rates = rates or {}

    @classmethod
    def of_store(cls, root: Path) -> "History":
        rates: dict[tuple, list[float]] = {}
        for record_path in Path(root).glob("*/*/stage.json"):
            try:
                record = json.loads(record_path.read_text())
                if "device" not in record or "seconds" not in record:
                    continue  # built before devices and sizes were recorded
                key = (sort_of(record["kind"], record["fields"]), record["device"])
                rates.setdefault(key, []).append(record["seconds"] / units(record.get("size") or {}))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a record this version cannot read says nothing about cost
        return cls(rates)

    def add(self, stage: Stage, device: str, seconds: float) -> None:
        key = (sort_of(stage.kind, stage.fields), device)
        self.rates.setdefault(key, []).append(seconds / units(stage_size(stage)))

    def estimate(self, stage: Stage, device: str) -> float | None:
        rates = self.rates.get((sort_of(stage.kind, stage.fields), device))
        return statistics.median(rates) * units(stage_size(stage)) if rates else None


def expected_seconds(stage: Stage, history: History, device: str) -> float:
    measured = history.estimate(stage, device)
    return prior_seconds(stage) if measured is None else measured
