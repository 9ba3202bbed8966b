"""Defenses: base model -> defended model.

A defense class has `Options` (a config dataclass, or None) and
`apply(model: ModelRef, out: Path, options, seed: int, report) -> ModelRef`, writing any
weights it trains into `out`. A defense whose `identity` is true writes nothing and
returns its input, so its cells share the base model's cached stages.
"""
