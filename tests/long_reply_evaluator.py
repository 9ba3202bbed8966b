"""A new evaluator in one file (the registry line is added by the test that uses it): the share of completions
longer than a threshold, a text check that runs no model; it states its own work for the cost model."""
from __future__ import annotations

from dataclasses import dataclass

from frpo_bench.evaluators.base import EvalResult, EvaluatorBase, Metric, ScoreInputs
from frpo_bench.typed import Options, opt
from frpo_bench.work import Shape, Wait, Work


@dataclass
class LongReplyOptions(Options):
    characters: int = opt(40, help="a completion longer than this counts")


class LongReplyEvaluator(EvaluatorBase):
    """Share of completions longer than a threshold."""

    Options = LongReplyOptions
    version = "long-reply-v1"
    needs_completions = True

    @staticmethod
    def work(options, shape: Shape) -> Work:
        return Work(steps=(Wait(0.001 * shape.prompts),))

    def score(self, inputs: ScoreInputs, options: LongReplyOptions) -> EvalResult:
        values = [float(len(c) > options.characters) for c in inputs.completions]
        records = [{"id": row.get("id"), "prompt": row["prompt"], "response": c, "score": v}
                   for row, c, v in zip(inputs.prompts, inputs.completions, values)]
        return EvalResult([Metric("", values, higher_is_better=False)], records,
                          {"judge": f"length>{options.characters}", "template": "-"})
