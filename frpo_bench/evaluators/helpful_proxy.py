"""Helpfulness proxy (offline): the share of benign requests answered rather than refused, without
degenerate repetition. The same definition as the RL defenses' offline helpfulness reward
(`defenses.rewards.helpful_proxy_reward`); a stand-in for a reward model where none can be loaded,
and labelled as such in every row."""
from __future__ import annotations

from frpo_bench.evaluators.base import EvalResult, Metric, ScoreInputs

VERSION = "helpful-proxy-v1"


class HelpfulProxyEvaluator:
    """Share of answers that are non-empty, not refusals and not degenerate (higher is better)."""

    Options = None
    version = VERSION
    needs_completions = True

    def score(self, inputs: ScoreInputs, options) -> EvalResult:
        from frpo_bench.defenses.rewards import BENIGN, helpful_proxy_reward
        scores = helpful_proxy_reward(None, inputs.completions, [BENIGN] * len(inputs.completions))
        records = [{"id": p.get("id"), "prompt": p["prompt"], "response": c, "score": s}
                   for p, c, s in zip(inputs.prompts, inputs.completions, scores)]
        return EvalResult([Metric("", scores, higher_is_better=True)], records,
                          {"judge": f"proxy:{VERSION} (refusal markers + repetition)", "template": "-"})
