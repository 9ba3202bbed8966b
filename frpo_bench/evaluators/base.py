"""Shared evaluator types and the interval math."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from frpo_bench.models import ModelRef

BOOTSTRAP_SAMPLES = 2000


@dataclass
class ScoreInputs:
    prompts: list[dict]  # dataset rows (prompt sets) or math rows
    completions: Optional[list[str]]  # aligned with prompts; None for evaluators that generate themselves
    model: ModelRef
    harmful: bool  # whether the prompt set is harmful (sets the direction of refusal-style metrics)
    dataset: str
    split: str
    generation: dict  # the generation settings that produced the completions
    workdir: Path


@dataclass
class Metric:
    suffix: str  # "" for the evaluation's main metric, else appended as "<metric>:<suffix>"
    per_sample: list[float]
    higher_is_better: bool
    unit: str = "rate"

    @property
    def value(self) -> float:
        return sum(self.per_sample) / len(self.per_sample) if self.per_sample else float("nan")


@dataclass
class EvalResult:
    metrics: list[Metric]
    records: list[dict]  # one per sample: prompt, response, parsed fields, score
    meta: dict[str, Any] = field(default_factory=dict)  # judge, template hash, versions


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def bootstrap_ci(values: Sequence[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over samples (resampling prompts)."""
    import numpy as np
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))
