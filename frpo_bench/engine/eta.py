"""Expected seconds of a stage from the store's own history: every finished stage records its kind,
device, seconds and size (stage.json), so a new stage of the same sort on the same device is
estimated by the median seconds per unit of size of those records, times its own size. Where the store
has no record, the cost model (engine/estimate.py) on this machine's own measured matmul peaks gives the
prior (`CostPrior`); the stage table's constants only where even that cannot say."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from frpo_bench.engine.stages import Stage, prior_seconds, sort_of, stage_size


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


class CostPrior:
    """A stage's seconds before any is measured: the cost model for this plan's model on this machine (a CPU
    by its matmul peaks, measured once; a GPU by its spec sheet)."""

    def __init__(self, stages: list[Stage], device: str):
        from frpo_bench.engine.estimate import plan_parameters
        self.params = plan_parameters(stages)
        self.device, self._machine = device, None

    def machine(self):
        if self._machine is None:
            from frpo_bench.engine import estimate
            if self.device.startswith("cuda"):
                import torch
                name = torch.cuda.get_device_name(int(self.device.split(":")[1]) if ":" in self.device else 0)
                self._machine = estimate.MACHINES["h200" if "H200" in name else "a100-80g" if "A100" in name else "h100"]
            else:
                self._machine = estimate.this_cpu()
        return self._machine

    def __call__(self, stage: Stage) -> float:
        from frpo_bench.engine import estimate
        if self.params is None:
            return prior_seconds(stage)
        try:
            return estimate.stage_estimate(stage, self.params, self.machine()).seconds
        except (KeyError, TypeError, ValueError):  # a stage the cost model does not know
            return prior_seconds(stage)


def expected_seconds(stage: Stage, history: History, device: str, prior=prior_seconds) -> float:
    measured = history.estimate(stage, device)
    return prior(stage) if measured is None else measured
