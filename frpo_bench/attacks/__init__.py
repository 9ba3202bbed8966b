"""Attacks: defended model -> attacked model (full weights or a LoRA adapter).

An attack class has `apply(model: ModelRef, out: Path, cfg, lr: float, seed: int, report) -> ModelRef`
where `cfg` is the recipe's AttackConfig (data, LoRA or full, steps, batch, schedule).
"""
