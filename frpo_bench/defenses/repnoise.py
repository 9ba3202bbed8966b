"""RepNoise, representation noising (Rosati et al., NeurIPS 2024; domenicrosati/representation-noising).

Trained on paired data: each harmful request with a harmful answer and, for the same request, a refusal.
Per step, on a batch of such pairs (mean over the answer tokens):

    loss = CE(refusals) + beta * noise - alpha * log(harmful + 1)

    noise   = mean over layers of MMD(each layer's MLP output on the harmful answers, Gaussian noise of the
              same shape), one flattened row per sequence: harmful representations pushed toward noise
    harmful = mean of the harmful answers' CE at the output and read through the output head at every layer
              (the logit lens): raised, so the harmful answer is unlearned at every depth, bounded by the log

Upstream applies the final norm again to the last hidden state, which the model has already normed; here the
last one is the model's own output (its CE counted once more in its place). Full weights by default, as
upstream; `lora` trains an adapter instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from frpo_bench.data.ref import DataRef
from frpo_bench.defenses.base import DefenseBase
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.models.precision import Bf16Option, bf16_option
from frpo_bench.training.options import LoraConfig
from frpo_bench.typed import Options, check_positive, opt
from frpo_bench.work import Shape, Work, paired_training_work


@dataclass
class RepNoiseOptions(Bf16Option, Options):
    harmful: list[DataRef] = opt(help="harmful requests with harmful answers")
    refusals: list[DataRef] = opt(help="the same requests with refusals (matched by request text; requests "
                                       "without one are dropped, and none matched is an error)")
    alpha: float = opt(1.0, help="weight of the harmful-answer ascent term -log(harmful CE + 1) (upstream: 1)")
    beta: float = opt(0.001, help="weight of the MMD-to-noise term (upstream: 0.001)")
    lr: float = opt(2e-5, help="learning rate (upstream: 2e-5)")
    steps: int = opt(100, help="optimizer steps (upstream: one epoch of its data)")
    batch_size: int = opt(8, help="pairs per step (upstream: 8)")
    max_length: int = opt(256, help="tokens per sequence")
    max_grad_norm: float = opt(1.0, help="gradient clipping norm")
    bf16: Union[bool, str] = bf16_option()
    lora: Optional[LoraConfig] = opt(None, help="train a LoRA adapter instead of the full weights (upstream: full)")

    def validate(self, path: str) -> None:
        self.check_bf16(path)
        check_positive(self, path, "lr", "steps", "batch_size", "max_length", "max_grad_norm")
        for name in ("alpha", "beta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}", getattr(self, name), "must not be negative", "use e.g. 1 or 0.001")

    def data_refs(self) -> list[DataRef]:
        return [*self.harmful, *self.refusals]


def paired_rows(harmful: list[dict], refusals: list[dict]) -> list[tuple[dict, dict]]:
    """(harmful pair, refusal pair) for each harmful request that has a refusal, in the harmful set's order."""
    from frpo_bench.training.batches import same_prompt_pairs
    pairs = same_prompt_pairs(harmful, refusals)
    if not pairs:
        raise ValueError("no harmful request has a refusal in the refusals data: RepNoise needs the same requests "
                         "answered both ways")
    return pairs


def repnoise_loss(refusal_ce, noise, harmful_ce, alpha: float, beta: float):
    """The objective from its three terms (each already averaged)."""
    import torch
    return refusal_ce + beta * noise - alpha * torch.log(harmful_ce + 1)


def mlp_modules(lm) -> list:
    """Each decoder layer's MLP block (its output is what RepNoise noises)."""
    from frpo_bench.training.losses import layer_modules
    return layer_modules(lm, "mlp", "repnoise")


def noise_term(outputs: list, mask):
    """Mean over layers of MMD(masked MLP outputs, masked standard Gaussian noise), one row per sequence."""
    import torch

    from frpo_bench.training.losses import gaussian_mmd
    total = 0.0
    for hidden in outputs:
        keep = mask.unsqueeze(-1).to(hidden.dtype)
        rows = (hidden * keep).flatten(1)
        noise = (torch.randn_like(hidden) * keep).flatten(1)
        total = total + gaussian_mmd(rows, noise)
    return total / len(outputs)


def lens_ce(lm, hidden_states, labels):
    """The harmful answers' CE at the output and through the output head at every layer, averaged: the
    embeddings and each layer but the last through the final norm and the unembedding, the last as it is."""
    from frpo_bench.training.losses import head_ce
    unembed, norm = lm.get_output_embeddings(), lm.get_decoder().norm
    terms = [head_ce(lambda h: unembed(norm(h)), h, labels) for h in hidden_states[:-1]]
    terms.append(head_ce(unembed, hidden_states[-1], labels))
    return sum(terms) / len(terms)


class RepNoiseDefense(DefenseBase):
    """Representation noising: harmful representations pushed toward Gaussian noise and harmful answers
    unlearned at every layer, while the refusals of the same requests are learned."""

    Options = RepNoiseOptions

    @staticmethod
    def work(options, shape: Shape) -> Work:  # 2 forward-backward passes a step
        return paired_training_work(2, options.steps, options.batch_size, options.max_length, options.lora is not None)

    def apply(self, model: ModelRef, out: Path, options: RepNoiseOptions, seed: int, report=print) -> ModelRef:
        from frpo_bench.data import ref_rows
        from frpo_bench.training.batches import pad_batch, row_batches, tokenize_pairs
        from frpo_bench.training.defense_loop import start_run
        from frpo_bench.training.distributed import shard, to_device
        from frpo_bench.training.losses import captured_outputs, causal_ce
        run = start_run(model, out, options.lora, options.lr, options.steps, seed, bf16=options.bf16)
        tokenizer, accelerator = run.tokenizer, run.accelerator
        pairs = paired_rows([r for ref in options.harmful for r in ref_rows(ref)],
                            [r for ref in options.refusals for r in ref_rows(ref)])
        tokenized = [(tokenize_pairs(tokenizer, [h], options.max_length), tokenize_pairs(tokenizer, [r], options.max_length))
                     for h, r in pairs]
        features = [(h[0], r[0]) for h, r in tokenized if h and r]  # both answers must survive truncation
        blocks = mlp_modules(run.model)
        stream = shard(row_batches(features, options.batch_size, seed), accelerator.process_index,
                       accelerator.num_processes)
        for step in range(1, options.steps + 1):
            rows = next(stream)
            harmful_batch = to_device(pad_batch([h for h, _ in rows], tokenizer.pad_token_id), accelerator.device)
            refusal_batch = to_device(pad_batch([r for _, r in rows], tokenizer.pad_token_id), accelerator.device)
            with run.autocast():
                refusal_ce = causal_ce(run.lm, refusal_batch)
                with captured_outputs(blocks) as mlp_outputs:
                    result = run.lm(input_ids=harmful_batch["input_ids"], attention_mask=harmful_batch["attention_mask"],
                                    output_hidden_states=True, logits_to_keep=1)  # the CE reads the hidden states
                noise = noise_term(mlp_outputs, harmful_batch["labels"] != -100)
                harmful_ce = lens_ce(run.model, result.hidden_states, harmful_batch["labels"])
            loss = repnoise_loss(refusal_ce, noise, harmful_ce, options.alpha, options.beta)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(run.lm.parameters(), options.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad()
            run.log(step, {"loss": loss.item(), "refusal_ce": refusal_ce.item(), "noise_mmd": noise.item(),
                           "harmful_ce": harmful_ce.item()},
                    f"refusal CE {refusal_ce.item():.3f} harmful CE {harmful_ce.item():.3f} noise MMD "
                    f"{noise.item():.4f}", report)
        return run.finish(model, out, {"pairs": len(features)})
