"""Reward functions for RL hardening, by name: TRL-shaped adapters of the evaluators' own scoring
(the definitions live there, so a reward and the metric of the same name cannot drift apart).
Each applies to its own prompt kind and returns None for the other (TRL then leaves that reward
out of the completion's total).

  refusal         safety reward on harmful prompts: 1 if the reply refuses (evaluators.text_checks), else 0
  helpful_proxy   offline helpfulness on benign prompts: 1 if evaluators.text_checks counts the reply
                  as helpful (non-empty, no refusal marker, not degenerate repetition), else 0
  reward_model    helpfulness from a reward model on benign prompts: sigmoid of the logit of an
                  AutoModelForSequenceClassification (the paper: allenai/Llama-3.1-8B-Instruct-RM-RB2)
"""
from __future__ import annotations

from typing import Callable

from frpo_bench.evaluators.text_checks import is_helpful, is_refusal

HARMFUL, BENIGN = "harmful", "benign"


def completion_text(completion) -> str:
    """TRL passes conversational completions as a list of messages."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def refusal_reward(prompts, completions, kind, **_) -> list[float | None]:
    return [float(is_refusal(completion_text(c))) if k == HARMFUL else None for c, k in zip(completions, kind)]


def helpful_proxy_reward(prompts, completions, kind, **_) -> list[float | None]:
    return [float(is_helpful(completion_text(c))) if k == BENIGN else None for c, k in zip(completions, kind)]


class RewardModelReward:
    """sigmoid(logit) of a sequence-classification reward model on (prompt, reply) chats."""

    def __init__(self, model_id: str, revision: str | None = None, batch_size: int = 8):
        from frpo_bench.evaluators.hf_judge import JudgeModel, RewardModel
        self.model = RewardModel(JudgeModel(model_id, revision), batch_size=batch_size)
        self.__name__ = "reward_model"

    def scores(self, chats: list[list[dict]]) -> list[float]:
        return self.model.scores(chats)

    def __call__(self, prompts, completions, kind, **_) -> list[float | None]:
        picked = [i for i, k in enumerate(kind) if k == BENIGN]
        chats = [list(prompts[i]) + [{"role": "assistant", "content": completion_text(completions[i])}] for i in picked]
        values = dict(zip(picked, self.scores(chats))) if picked else {}
        return [values.get(i) for i in range(len(kind))]


def make_reward(name: str, reward_model: str = "", reward_model_revision: str | None = None) -> Callable:
    if name == "refusal":
        return refusal_reward
    if name == "helpful_proxy":
        return helpful_proxy_reward
    if name == "reward_model":
        return RewardModelReward(reward_model, reward_model_revision)
    raise KeyError(name)


SAFETY_REWARDS = ("refusal",)
HELPFULNESS_REWARDS = ("helpful_proxy", "reward_model")
