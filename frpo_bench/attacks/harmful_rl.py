"""Harmful reinforcement learning (HarmRLVR, arXiv 2510.15499): GRPO from the defended model on harmful prompts,
rewarded for compliance, the threat an RL-trained defense such as FRPO must next survive. The trainer is the
RL defenses' own (TRL's GRPOTrainer through defenses/trl_adapter.py); only the reward is the attacker's:
`compliance` (no refusal marker: the refusal reward negated) or `strongreject_score` (the StrongREJECT
fine-tuned judge's harm score). Benign prompts with a helpfulness reward are optional (an attacker who keeps
the model useful). `beta` is the KL penalty to the defended model (0: none). The learning rate is the attack's
sweep (`lrs`), as for every training attack; trajectory points are kept like the SFT attacks', and a train log
gives reward, KL and loss by step.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

from frpo_bench.attacks.base import AttackBase
from frpo_bench.data.ref import DataRef
from frpo_bench.defenses.rl_options import RLOptions, rl_work
from frpo_bench.models import ModelRef
from frpo_bench.typed import opt
from frpo_bench.work import Shape, Work


@dataclass
class HarmfulRLOptions(RLOptions):
    benign_prompts: Optional[DataRef] = opt(None, help="benign prompts with the helpfulness reward beside the harmful "
                                                       "ones (an attacker who keeps the model useful); null: harmful only")
    safety_reward: str = opt("compliance", help="the attacker's reward on harmful prompts: compliance (1 without a "
                                                "refusal marker; offline) or strongreject_score (the StrongREJECT "
                                                "fine-tuned judge's harm score)")
    beta: float = opt(0.0, help="KL penalty to the defended model (k3 estimator); 0: the attacker stays nowhere near")
    lr: float = opt(1e-5, omit_if_default=True, help="unused: the attack's `lrs` give its learning rates")

    @staticmethod
    def harmful_prompt_rewards() -> tuple[str, ...]:
        from frpo_bench.defenses.rewards import HARM_REWARDS
        return HARM_REWARDS

    def planned_steps(self) -> int:
        return self.steps

    def key_fields(self) -> dict:
        fields = super().key_fields()
        fields.pop("lr", None)  # the stage's own lr (the sweep's) is in its key
        return fields

    def notes(self) -> list[str]:
        return []  # the defenses' notes compare with the FRPO reference's rewards, which this attack does not use


class HarmfulRLAttack(AttackBase):
    """GRPO on harmful prompts with a reward for compliance, from the defended model."""

    Options = HarmfulRLOptions

    @staticmethod
    def work(options: HarmfulRLOptions, shape: Shape) -> Work:
        return rl_work(options)

    def apply(self, model: ModelRef, out: Path, options: HarmfulRLOptions, lr: float, seed: int, report=print,
              checkpoint_steps: Sequence[int] = (), stop_at: Optional[int] = None, warm=None) -> ModelRef:
        """A search rung (`stop_at`) trains from step 0 to its stop: RL keeps no resumable state here."""
        from frpo_bench.defenses.trl_adapter import train_rl
        return train_rl(model, out, replace(options, lr=lr), seed, group_advantages=None, group_statistics={},
                        report=report, checkpoint_steps=checkpoint_steps, stop_at=stop_at)
