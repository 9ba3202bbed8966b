"""FRPO hardening: GRPO with the robust (worst case over a KL ball) advantage and nothing else."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from frpo_bench.defenses.frpo_math import frpo_advantages, robust_objective
from frpo_bench.defenses.rl_options import FRPOOptions, RLDefenseBase
from frpo_bench.models import ModelRef


class FRPODefense(RLDefenseBase):
    """FRPO: fine-tuning-robust policy optimisation (arXiv 2602.08813), jackknife or plug-in advantages."""

    Options = FRPOOptions

    def apply(self, model: ModelRef, out: Path, options: FRPOOptions, seed: int, report=print) -> ModelRef:
        from frpo_bench.defenses.trl_adapter import train_rl
        advantages = partial(frpo_advantages, lam=options.lam, jackknife=options.jackknife)
        statistics = {"frpo/robust_objective": partial(robust_objective, lam=options.lam, jackknife=options.jackknife),
                      "frpo/robust_objective_lam1": partial(robust_objective, lam=1.0)}
        return train_rl(model, out, options, seed, group_advantages=advantages, group_statistics=statistics,
                        report=report)
