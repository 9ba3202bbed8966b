"""TAR, tamper-resistant safeguards (Tamirisa et al. 2024), trained with full weights.

Each outer step:
  1. saves the weights theta and samples an adversary (a learning rate from `inner_lrs`, batches of
     harmful fine-tuning data);
  2. runs K inner AdamW steps of that attack on the live weights and, every `tamper_every` inner
     steps, adds the gradient of the tamper-resistance loss at the attacked weights to a buffer
     (first-order: the gradient is applied to theta as if taken there);
  3. restores theta exactly (the adversary's changes never leak into the update);
  4. adds the retain gradient at theta (next-token CE on benign data + L2 between the model's and
     the frozen starting model's hidden states) and takes the outer AdamW step on
         tamper_weight(t) * mean(tamper grads) + retain_weight * retain grad.
Tamper-resistance loss: `dpo` (refusal setting: prefer each harmful prompt's refusal over its
compliant answer, DPO-style with the starting model as reference) or `entropy` (negative entropy of
the next-token distribution on harmful answers, the bio/cyber setting).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from frpo_bench.data.ref import DataRef
from frpo_bench.defenses.base import DefenseBase
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.typed import Options, check_positive, check_positive_value, opt
from frpo_bench.work import Shape, Train, TrainMemory, WeightsMemory, Work, sft_tokens

TAMPER_LOSSES = ("dpo", "entropy")


@dataclass
class TAROptions(Options):
    adversary_data: list[DataRef] = opt(help="harmful fine-tuning pairs the inner adversary trains on")
    tamper_compliance: list[DataRef] = opt(help="the same prompts with compliant answers (dispreferred; the "
                                                "entropy loss uses these)")
    retain_data: list[DataRef] = opt(help="benign pairs for the retain loss")
    tamper_refusals: list[DataRef] = opt([], help="held-out harmful prompts with refusals (preferred answers; dpo only)")
    tamper_loss: str = opt("dpo", help=f"tamper-resistance loss, one of {TAMPER_LOSSES}")
    steps: int = opt(100, help="outer steps")
    inner_steps: int = opt(4, help="adversary AdamW steps per outer step, K (upstream: 64)")
    inner_lrs: list[float] = opt([2e-5, 4e-5, 1e-5], help="adversary learning rates, one sampled per outer step")
    tamper_every: int = opt(1, help="take the tamper-resistance gradient every this many inner steps (subsampling)")
    lr: float = opt(2e-5, help="outer learning rate")
    tamper_weight: float = opt(4.0, help="weight of the tamper-resistance gradient")
    tamper_warmup_steps: int = opt(0, help="outer steps over which the tamper weight ramps up linearly from 0")
    retain_weight: float = opt(1.0, help="weight of the retain loss")
    representation_weight: float = opt(1.0, help="weight of the hidden-state L2 inside the retain loss")
    dpo_beta: float = opt(0.1, help="DPO temperature of the refusal tamper-resistance loss")
    batch_size: int = opt(8, help="sequences per batch (adversary, tamper and retain alike)")
    max_length: int = opt(256, help="tokens per sequence")
    max_grad_norm: float = opt(1.0, help="clipping norm of the outer gradient")

    def validate(self, path: str) -> None:
        if self.tamper_loss not in TAMPER_LOSSES:
            raise ConfigError(f"{path}.tamper_loss", self.tamper_loss, "is not a tamper-resistance loss",
                              f"use one of {TAMPER_LOSSES}")
        check_positive(self, path, "steps", "inner_steps", "tamper_every", "lr", "batch_size", "max_length",
                       "max_grad_norm")
        if not self.inner_lrs:
            raise ConfigError(f"{path}.inner_lrs", self.inner_lrs, "is empty", "list adversary learning rates, e.g. [2e-5, 4e-5]")
        for i, lr in enumerate(self.inner_lrs):
            check_positive_value(lr, f"{path}.inner_lrs.{i}")
        if self.tamper_loss == "dpo" and not self.tamper_refusals:
            raise ConfigError(f"{path}.tamper_refusals", self.tamper_refusals, "is empty, and the dpo tamper loss "
                              "prefers these refusals over tamper_compliance", "list held-out harmful prompts with "
                              "refusals (e.g. {dataset: demo_refusals, split: train}), or use tamper_loss: entropy")
        if self.tamper_every > self.inner_steps:
            raise ConfigError(f"{path}.tamper_every", self.tamper_every, "exceeds inner_steps",
                              f"use at most {self.inner_steps}")

    def data_refs(self) -> list[DataRef]:
        return [*self.adversary_data, *self.tamper_refusals, *self.tamper_compliance, *self.retain_data]


def tamper_weight_at(step: int, weight: float, warmup: int) -> float:
    return weight if warmup <= 0 else weight * min(1.0, (step + 1) / warmup)


def sequence_logprobs(model, batch):
    """Sum of log-probabilities of the labelled (response) tokens of each sequence."""
    import torch
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    picked = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    import torch
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin).mean()


def dpo_on_pairs(policy_logps, reference_logps, beta: float):
    """DPO loss on one batch holding the chosen sequences first, then the rejected ones in the same order."""
    half = policy_logps.shape[0] // 2
    return dpo_loss(policy_logps[:half], policy_logps[half:], reference_logps[:half], reference_logps[half:], beta)


def negative_entropy(model, batch):
    """Mean over response tokens of -H(next-token distribution): minimising it raises the entropy."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    mask = (batch["labels"][:, 1:] != -100).float()
    log_p = logits.log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return -(entropy * mask).sum() / mask.sum()


def tamper_gradients(model, params: list, adversary_batches: list, tamper_loss_fn, lr: float, tamper_every: int,
                     backward=None):
    """Run the inner attack on the live weights, collecting tamper-resistance gradients; restore the
    weights exactly before returning. Returns (mean gradients, largest weight change the attack made).
    Gradients go through `backward` (accelerate's, under DDP/FSDP) into .grad, never autograd.grad,
    so that distributed wrappers reduce them."""
    import torch
    backward = backward or (lambda loss: loss.backward())
    saved = [p.detach().clone() for p in params]
    inner = torch.optim.AdamW(params, lr=lr)
    total = [torch.zeros_like(p) for p in params]
    taken, shift = 0, 0.0
    try:
        for k, batch in enumerate(adversary_batches):
            backward(model(**batch).loss)
            inner.step()
            inner.zero_grad(set_to_none=True)
            if (k + 1) % tamper_every == 0:
                backward(tamper_loss_fn(model))
                for acc, p in zip(total, params):
                    if p.grad is not None:
                        acc.add_(p.grad)
                inner.zero_grad(set_to_none=True)
                taken += 1
        shift = max((p.detach() - s).abs().max().item() for p, s in zip(params, saved))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        inner.zero_grad(set_to_none=True)
    return [g / max(taken, 1) for g in total], shift


def retain_loss(model, reference, batch, representation_weight: float):
    """Next-token CE on benign data + L2 between the model's and the reference's hidden states."""
    import torch

    from frpo_bench.training.losses import representation_distance  # masked mean L2 over layers, tokens
    out = model(**batch, output_hidden_states=True)
    with torch.no_grad():
        ref = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    distance = representation_distance(torch.stack(out.hidden_states[1:]), torch.stack(ref.hidden_states[1:]),
                                       batch["attention_mask"])
    return out.loss + representation_weight * distance


class TARDefense(DefenseBase):
    """Tamper-resistant safeguards: meta-learned resistance to fine-tuning attacks (full weights)."""

    Options = TAROptions

    @staticmethod
    def work(options, shape: Shape) -> Work:
        """Per outer step: the inner attack's steps, the tamper-resistance gradients and the retain step, all full
        weights; a frozen reference copy beside the model."""
        passes = options.inner_steps + options.inner_steps // max(options.tamper_every, 1) + 1
        tokens = options.steps * passes * sft_tokens(1, options.batch_size, options.max_length)
        return Work(loads=2, steps=(Train(tokens, options.steps * passes, lora=False, bf16=True),),
                    memory=(TrainMemory(options.batch_size * options.max_length, full=True), WeightsMemory(1)))

    def apply(self, model: ModelRef, out: Path, options: TAROptions, seed: int, report=print) -> ModelRef:
        import copy

        import torch

        from frpo_bench.data import ref_rows
        from frpo_bench.models.loading import load_for_training
        from frpo_bench.training.batches import batches, pad_batch, same_prompt_pairs, tokenize_pairs
        from frpo_bench.training.distributed import make_accelerator, save_trained, shard, to_device
        torch.manual_seed(seed)
        rng = random.Random(seed)  # the same on every process: adversary learning rates and tamper rows agree
        accelerator = make_accelerator()
        rank, world = accelerator.process_index, accelerator.num_processes
        tokenizer, lm, _ = load_for_training(model, Path(out), new_adapter=False, padding_side="right")
        lm.train()
        reference = copy.deepcopy(lm).eval().requires_grad_(False)  # the starting model: DPO reference, retain anchor
        outer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=options.lr)
        lm, outer = accelerator.prepare(lm, outer)  # FSDP shards the weights under an FSDP accelerate config
        reference = accelerator.prepare_model(reference, evaluation_mode=True)
        params = [p for p in lm.parameters() if p.requires_grad]
        rows = lambda refs: [r for ref in refs for r in ref_rows(ref)]  # noqa: E731
        compliance = rows(options.tamper_compliance)
        if options.tamper_loss == "dpo":
            pairs = same_prompt_pairs(rows(options.tamper_refusals), compliance)
            if not pairs:
                raise ValueError("tamper_refusals and tamper_compliance share no prompt: DPO pairs need the same prompts")
            chosen = tokenize_pairs(tokenizer, [c for c, _ in pairs], options.max_length)
            rejected = tokenize_pairs(tokenizer, [r for _, r in pairs], options.max_length)
        else:  # entropy: only the harmful answers
            rejected = tokenize_pairs(tokenizer, compliance, options.max_length)
            chosen = rejected
        pad, device = tokenizer.pad_token_id, accelerator.device
        adversary = shard(batches(tokenize_pairs(tokenizer, rows(options.adversary_data), options.max_length),
                                  options.batch_size, pad, seed), rank, world)
        retain = shard(batches(tokenize_pairs(tokenizer, rows(options.retain_data), options.max_length),
                               options.batch_size, pad, seed + 1), rank, world)
        history, start = [], time.time()
        for step in range(options.steps):
            n_rows = min(len(chosen), len(rejected))
            idx = rng.sample(range(n_rows), min(options.batch_size * world, n_rows))[rank::world] or [rank % n_rows]
            if options.tamper_loss == "dpo":  # chosen and rejected in one forward (one backward per forward for DDP)
                tamper = to_device(pad_batch([chosen[i] for i in idx] + [rejected[i] for i in idx], pad), device)
                with torch.no_grad():
                    ref_logps = sequence_logprobs(reference, tamper)
                loss_fn = lambda m: dpo_on_pairs(sequence_logprobs(m, tamper), ref_logps, options.dpo_beta)  # noqa: E731
            else:
                tamper = to_device(pad_batch([rejected[i] for i in idx], pad), device)
                loss_fn = lambda m: negative_entropy(m, tamper)  # noqa: E731
            inner_lr = rng.choice(options.inner_lrs)
            grads, shift = tamper_gradients(lm, params, [to_device(next(adversary), device)
                                                         for _ in range(options.inner_steps)],
                                            loss_fn, inner_lr, options.tamper_every, accelerator.backward)
            l_retain = retain_loss(lm, reference, to_device(next(retain), device), options.representation_weight)
            accelerator.backward(options.retain_weight * l_retain)
            weight = tamper_weight_at(step, options.tamper_weight, options.tamper_warmup_steps)
            for p, g_t in zip(params, grads):
                p.grad = weight * g_t + (p.grad if p.grad is not None else 0)
            accelerator.clip_grad_norm_(params, options.max_grad_norm)
            outer.step()
            outer.zero_grad(set_to_none=True)
            with torch.no_grad():
                tamper_after = loss_fn(lm).item()
            history.append({"step": step + 1, "inner_lr": inner_lr, "adversary_shift": shift, "tamper_loss": tamper_after,
                            "retain_loss": l_retain.item(), "tamper_weight": weight})
            elapsed = time.time() - start
            if accelerator.is_main_process:
                report(f"step {step + 1}/{options.steps} tamper {tamper_after:.3f} retain {l_retain.item():.3f} "
                       f"(adversary lr {inner_lr:g}; {elapsed:.0f}s, ETA {elapsed / (step + 1) * (options.steps - step - 1):.0f}s)")
        accelerator.unwrap_model(lm).config.use_cache = True
        save_trained(accelerator, lm, Path(out), tokenizer)
        if accelerator.is_main_process:
            (Path(out) / "train_log.json").write_text(json.dumps(
                {"seconds": time.time() - start, "processes": world, "history": history}, indent=2))
        return ModelRef(str(out), trust_remote_code=model.trust_remote_code)
