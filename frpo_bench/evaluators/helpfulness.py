"""Helpfulness: mean sigmoid(reward-model logit) of (benign prompt, response) chats under a
sequence-classification reward model (default allenai/Llama-3.1-8B-Instruct-RM-RB2), using the
reward model's own chat template."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from frpo_bench.evaluators.base import EvalResult, EvaluatorBase, Metric, ModelScoringOptions, ScoreInputs
from frpo_bench.typed import opt
from frpo_bench.work import Shape, Work, local_judge_work

VERSION = "reward-model-sigmoid-v1"


@dataclass
class Options(ModelScoringOptions):
    reward_model: str = opt("allenai/Llama-3.1-8B-Instruct-RM-RB2", help="reward model (Hub id or local path)")
    revision: Optional[str] = opt(None, help="pinned revision of the reward model")
    dtype: str = opt("float32", help="compute dtype: float32, bfloat16, or auto (bf16 on a GPU, the faster one on a CPU)")
    batch_size: int = opt(4, help="chats per forward pass (transport only)")
    pad: str = opt("eos", omit_if_default=True, help="when the reward model's tokenizer has no pad token: eos (pad "
                   "with it) or new (add <|pad|> and resize the embeddings, as the FRPO reference's RM)")

    def validate(self, path: str) -> None:
        super().validate(path)
        from frpo_bench.evaluators.hf_judge import PAD_CHOICES
        if self.pad not in PAD_CHOICES:
            from frpo_bench.errors import ConfigError
            raise ConfigError(f"{path}.pad", self.pad, "is not a pad choice", f"use one of {PAD_CHOICES}")


class HelpfulnessEvaluator(EvaluatorBase):
    """Mean sigmoid reward of the responses (higher is better)."""

    Options = Options
    version = VERSION
    needs_completions = True

    @staticmethod
    def work(options, shape: Shape) -> Work:
        return local_judge_work(options.reward_model, shape.prompts, options.batch_size)

    def score(self, inputs: ScoreInputs, options: Options) -> EvalResult:
        from frpo_bench.evaluators.hf_judge import JudgeModel, RewardModel
        judge = JudgeModel(options.reward_model, options.revision, dtype=options.dtype, pad=options.pad)
        chats = [[{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": completion}]
                 for row, completion in zip(inputs.prompts, inputs.completions)]
        scores = RewardModel(judge, options.batch_size).scores(chats)
        records = [{"id": row.get("id"), "prompt": row["prompt"], "response": c, "score": s}
                   for row, c, s in zip(inputs.prompts, inputs.completions, scores)]
        padded = "" if options.pad == "eos" else f" (pad {options.pad})"
        return EvalResult([Metric("", scores, higher_is_better=True, unit="reward")], records,
                          {"judge": f"{judge.describe()} {options.dtype}{padded}", "template": "reward-model chat template"})
