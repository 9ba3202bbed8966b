"""GRPO hardening: TRL's group-normalised advantages (the paper's baseline: beta 0.1, std-scaled)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from frpo_bench.defenses.frpo_math import robust_objective
from frpo_bench.defenses.rl_options import RLDefenseBase, RLOptions
from frpo_bench.models import ModelRef


class GRPODefense(RLDefenseBase):
    """GRPO: online RL on safety + helpfulness rewards with group-normalised advantages."""

    Options = RLOptions

    def apply(self, model: ModelRef, out: Path, options: RLOptions, seed: int, report=print) -> ModelRef:
        from frpo_bench.defenses.trl_adapter import train_rl
        statistics = {"frpo/robust_objective_lam1": partial(robust_objective, lam=1.0)}  # comparable with FRPO logs
        return train_rl(model, out, options, seed, group_advantages=None, group_statistics=statistics, report=report)
