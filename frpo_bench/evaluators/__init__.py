"""Evaluators score saved completions (or, for lm-eval tasks, the model itself).

An evaluator class has `Options` (config dataclass or None), `version` (bumped when its
scores change meaning), `needs_completions`, and
`score(inputs: ScoreInputs, options) -> EvalResult`.
"""
