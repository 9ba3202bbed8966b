"""Held-out loss: the mean cross-entropy per response token of (prompt, response) pairs under the model, read as
fine-tuning reads them (the model's chat template, the loss on the response tokens only). The FRPO reference logs
it as `eval_loss` at every evaluation of an attack, on the 50 rows it holds out of the attack's data
(finetuning/SFT_alpaca.py, SFT_gsm8k.py); splits `reference_val` of `alpaca_hub` and `gsm8k` are those rows.

Per pair the value is its tokens' mean loss (the intervals resample pairs); the token-weighted mean over all pairs
is recorded too (`token_mean`), the nearer of the two to the Trainer's mean of its batches' token means.
"""
from __future__ import annotations

from dataclasses import dataclass

from frpo_bench.evaluators.base import EvalResult, EvaluatorBase, Metric, ModelScoringOptions, ScoreInputs
from frpo_bench.typed import opt
from frpo_bench.work import PAIR_RESPONSE_TOKENS, PROMPT_TOKENS, Forward, InferenceMemory, Shape, Work

VERSION = "response-token-nll-v1"


@dataclass
class Options(ModelScoringOptions):
    dtype: str = opt("float32", help="compute dtype: float32, bfloat16, or auto")
    max_length: int = opt(2048, help="tokens of prompt + response read, as the attack's max_length (the reference: 2048)")
    batch_size: int = opt(8, help="pairs per forward pass (transport only)")


def response_nll(model, features: list[dict], pad_id: int, batch_size: int) -> list[tuple[float, int]]:
    """(summed negative log-likelihood of the response tokens, their count) per tokenized pair."""
    import torch

    from frpo_bench.training.batches import pad_batch
    out = []
    with torch.inference_mode():
        for b in range(0, len(features), batch_size):
            batch = {k: v.to(model.device) for k, v in pad_batch(features[b: b + batch_size], pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
            kept = labels != -100
            out += list(zip((losses * kept).sum(-1).tolist(), kept.sum(-1).tolist()))
    return out


class ResponseLossEvaluator(EvaluatorBase):
    """Mean cross-entropy per response token of held-out pairs (lower: the model fits them better)."""

    Options = Options
    version = VERSION
    needs_completions = False

    @staticmethod
    def work(options, shape: Shape) -> Work:
        length = PROMPT_TOKENS + PAIR_RESPONSE_TOKENS  # the model reads held-out pairs once
        return Work(loads=1, steps=(Forward(shape.prompts * length, options.dtype),),
                    memory=(InferenceMemory(options.batch_size, length),))

    def score(self, inputs: ScoreInputs, options: Options) -> EvalResult:
        from frpo_bench.models.resident import inference_model, inference_tokenizer
        from frpo_bench.training.batches import tokenize_pairs
        tokenizer = inference_tokenizer(inputs.model, padding_side="right")
        pairs = [row if "response" in row else {"prompt": row["question"], "response": row["answer"]}
                 for row in inputs.prompts]
        features = tokenize_pairs(tokenizer, pairs, options.max_length)
        if len(features) != len(pairs):
            raise ValueError(f"{len(pairs) - len(features)} held-out pairs keep no response token within "
                             f"max_length={options.max_length}")
        inputs.report(f"loss on the responses of {len(features)} held-out pairs")
        totals = response_nll(inference_model(inputs.model, options.dtype), features, tokenizer.pad_token_id,
                              options.batch_size)
        values = [total / count for total, count in totals]
        records = [{"id": row.get("id"), "prompt": pair["prompt"], "response": pair["response"], "tokens": count,
                    "score": value} for row, pair, (_, count), value in zip(inputs.prompts, pairs, totals, values)]
        token_mean = sum(t for t, _ in totals) / sum(c for _, c in totals)
        return EvalResult([Metric("", values, higher_is_better=False, unit="nats")], records,
                          {"judge": f"response-token cross-entropy ({options.dtype})", "template": "model chat template",
                           "token_mean": token_mean})
