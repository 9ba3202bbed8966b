"""The contract of an evaluator, its typed inputs and result, and the interval math.

An evaluator is one file with a class registered in `registry.EVALUATORS`. It declares its
`Options` (a `typed.Options` dataclass, or `typed.NoOptions`), a `version` (bumped whenever its
scores change meaning: it enters the cache key), whether it `needs_completions` (scores saved
generations) or runs the model itself (lm-eval tasks), and implements one verb, `score`. A judge whose
per-sample score is a refusal or compliance verdict says so in `verdict` ("refusal": 1 = refused;
"compliance": 1 = answered), and `frpo-bench judges validate` can then check it against people.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Protocol

from frpo_bench.models import ModelRef
from frpo_bench.models.precision import DtypeOption
from frpo_bench.typed import Options, check_positive, key_fields_except
from frpo_bench.work import TEXT_CHECK, Shape, Work


@dataclass
class ScoreInputs:
    """Everything an evaluator may read, in one object."""

    prompts: list[dict]  # the rows the recipe's DataRef selects (prompt sets, or math rows), in selection order
    positions: list[int]  # where each of those rows sits in its split (for evaluators that select by index)
    completions: Optional[list[str]]  # aligned with prompts; None for evaluators that generate themselves
    model: ModelRef  # the model that produced the completions (or that self-generating evaluators run)
    harmful: bool  # whether the prompt set is harmful (sets the direction of refusal-style metrics)
    dataset: str
    split: str
    generation: dict  # the generation settings that produced the completions
    workdir: Path  # the score stage's own (temporary) artifact directory
    report: Callable[[str], None] = print  # progress lines
    start_model: Optional[ModelRef] = None  # the model before the attack (the defended model), for drift metrics
    engine: Any = None  # the run's GenerationConfig: the resident vLLM engine's settings, for scorers run on it


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
    # meta["incomplete"]: why this result must not be reused (e.g. judge answers that did not parse, which the judge
    # cache never keeps): the run uses it and says so, and the next run scores the stage again


class ModelScoringOptions(DtypeOption, Options):
    """Options of an evaluator that runs a model: a compute `dtype` (checked, `auto` resolved by the
    engine) and a `batch_size` that is transport only (never in the key). Subclasses declare both fields."""

    def key_fields(self) -> dict:
        return key_fields_except(self, ("batch_size",))

    def validate(self, path: str) -> None:
        check_positive(self, path, "batch_size")
        self.check_dtype(path)


class Evaluator(Protocol):
    Options: ClassVar[type[Options]]
    version: ClassVar[str]
    needs_completions: ClassVar[bool]
    verdict: ClassVar[Optional[str]]  # "refusal" | "compliance" when each score is such a verdict (EvaluatorBase: None)

    def score(self, inputs: ScoreInputs, options: Options) -> EvalResult:
        """Score every prompt of `inputs`: one or more metrics (per-sample values, direction), one record
        per sample (prompt, response, the judge's raw output and parsed verdict), and the provenance
        (`judge`, `template` and what else makes the number reproducible) in `meta`."""
        ...



class EvaluatorBase:
    """What every evaluator class inherits: the engine reads these, and an evaluator overrides the ones that differ."""

    verdict: ClassVar[Optional[str]] = None

    @staticmethod
    def work(options: Options, shape: Shape) -> Work:
        """What its score stage does, for the cost model and the executors (frpo_bench/work.py): by default a
        text check, which runs no model."""
        return TEXT_CHECK
