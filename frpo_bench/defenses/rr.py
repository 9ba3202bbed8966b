"""Representation rerouting (circuit breakers; Zou et al. 2024), trained with LoRA.

At step t of T, with alpha the loss scale:

    c_r  = alpha * t / (2T)          retain:    || h_lora - h_orig ||_2 on the retain set, every layer
    c_cb = alpha * (1 - t / (2T))    rerouting: ReLU(cos(h_lora, h_orig)) on the harmful set, target layers

h_orig are the frozen model's hidden states (the LoRA switched off), so no second copy of the
model is held. Target layers are fractions of depth (10/32 and 20/32 reproduce the 8B setting)
and the LoRA covers the layers up to the last target. Training runs under accelerate, so the
same code runs on CPU here and data-parallel on GPUs (`accelerate launch`, see docs/gpus.md).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from frpo_bench.data.ref import DataRef
from frpo_bench.defenses.base import DefenseBase
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.training.options import LoraConfig
from frpo_bench.typed import Options, check_positive, opt
from frpo_bench.work import Shape, Train, TrainMemory, Work, sft_tokens

RETAIN_DISTANCES = ("l2", "relative_l2")
REROUTE_TOKENS = ("all", "response")


@dataclass
class RROptions(Options):
    harmful: list[DataRef] = opt(help="circuit-breaker set: harmful prompts with harmful completions")
    retain: list[DataRef] = opt(help="retain set: benign pairs (and refusals of harmful prompts)")
    target_layers: list[float] = opt([10 / 32, 20 / 32], help="rerouting layers as fractions of depth "
                                                              "(10 and 20 of 32 for 8B models)")
    alpha: float = opt(10.0, help="loss scale of the schedule c_r = alpha t/2T, c_cb = alpha (1 - t/2T)")
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(r=16, alpha=16), metadata={
        "help": "LoRA settings (upstream: r 16, alpha 16), applied to the layers up to the last target layer"})
    retain_distance: str = opt("l2", omit_if_default=True, help=(
        "retain term per token: l2 (upstream, || h_lora - h_orig ||) or relative_l2 (divided by || h_orig ||). The "
        "cosine is scale-free but l2 is not: on models whose hidden states are large (SmolLM2: norms 100-900 "
        "against a cosine gradient of ~1/norm) l2 outweighs rerouting from the first steps; relative_l2 restores "
        "the balance the schedule intends"))
    reroute_tokens: str = opt("all", omit_if_default=True, help=(
        "tokens of the harmful set the rerouting term covers: all (upstream: request and response) or response "
        "(the harmful answer only). With a chat template that prepends a long system prompt shared by every "
        "conversation (SmolLM2: ~20 tokens), `all` asks the same representations to be both kept and rerouted"))
    lr: float = opt(1e-4, help="learning rate (upstream: 1e-4)")
    steps: int = opt(150, help="optimizer steps (upstream: 150)")
    batch_size: int = opt(16, help="harmful and retain sequences per step, each")
    max_length: int = opt(256, help="tokens per sequence")
    max_grad_norm: float = opt(1.0, help="gradient clipping norm")

    def validate(self, path: str) -> None:
        if not self.target_layers or not all(0 < f <= 1 for f in self.target_layers):
            raise ConfigError(f"{path}.target_layers", self.target_layers, "must be fractions in (0, 1]",
                              "use e.g. [0.3125, 0.625] (layers 10 and 20 of 32)")
        if self.retain_distance not in RETAIN_DISTANCES:
            raise ConfigError(f"{path}.retain_distance", self.retain_distance, "is not a retain distance",
                              f"use one of {RETAIN_DISTANCES}")
        if self.reroute_tokens not in REROUTE_TOKENS:
            raise ConfigError(f"{path}.reroute_tokens", self.reroute_tokens, "is not a token selection",
                              f"use one of {REROUTE_TOKENS}")
        check_positive(self, path, "lr", "steps", "batch_size", "max_length", "alpha", "max_grad_norm")

    def data_refs(self) -> list[DataRef]:
        return [*self.harmful, *self.retain]


def target_layer_indices(fractions: list[float], num_layers: int) -> list[int]:
    """Indices into hidden_states (0 = embeddings, i = output of layer i), at least 1."""
    return sorted({max(1, min(num_layers, round(f * num_layers))) for f in fractions})


def rr_coefficients(step: int, total: int, alpha: float) -> tuple[float, float]:
    progress = step / (2 * total)
    return alpha * progress, alpha * (1 - progress)


def rerouting_loss(h_lora, h_orig, mask):
    """Masked mean of ReLU(cos(h_lora, h_orig)): zero once the representations are orthogonal or opposed."""
    import torch
    cosine = torch.nn.functional.cosine_similarity(h_lora.float(), h_orig.float(), dim=-1)
    weights = mask.unsqueeze(0).expand_as(cosine).float()
    return (torch.relu(cosine) * weights).sum() / weights.sum()


class RRDefense(DefenseBase):
    """Circuit breakers: LoRA trained to reroute harmful representations and keep benign ones."""

    Options = RROptions

    @staticmethod
    def work(options, shape: Shape) -> Work:
        """Harmful and retain batches each step through the LoRA model, and once more through the frozen one."""
        batch_tokens = 2 * sft_tokens(1, options.batch_size, options.max_length)
        return Work(loads=2, steps=(Train(options.steps * batch_tokens * 1.5, options.steps, lora=True, bf16=True),),
                    memory=(TrainMemory(2 * options.batch_size * options.max_length, full=False),))

    def apply(self, model: ModelRef, out: Path, options: RROptions, seed: int, report=print) -> ModelRef:
        import torch
        from peft import get_peft_model

        from frpo_bench.data import ref_rows
        from frpo_bench.models.loading import load_for_training
        from frpo_bench.training.batches import batches, linear_module_names, peft_config, tokenize_pairs
        from frpo_bench.training.distributed import make_accelerator, save_trained, shard, to_device
        from frpo_bench.training.losses import hidden_states, representation_distance
        torch.manual_seed(seed)
        accelerator = make_accelerator()
        rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
        tokenizer, lm, base_path = load_for_training(model, Path(out), new_adapter=True, padding_side="right")
        layers = target_layer_indices(options.target_layers, lm.config.num_hidden_layers)
        targets = options.lora.target_modules
        if targets == ["all-linear"]:  # peft takes layers_to_transform only with named modules
            targets = linear_module_names(lm)
        lora = replace(options.lora, target_modules=targets)
        lm = get_peft_model(lm, peft_config(lora, layers_to_transform=list(range(max(layers)))))
        harmful = tokenize_pairs(tokenizer, [r for ref in options.harmful for r in ref_rows(ref)], options.max_length)
        retain = tokenize_pairs(tokenizer, [r for ref in options.retain for r in ref_rows(ref)], options.max_length)
        optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=options.lr)
        lm, optimizer = accelerator.prepare(lm, optimizer)
        harmful_stream = shard(batches(harmful, options.batch_size, tokenizer.pad_token_id, seed), rank, world)
        retain_stream = shard(batches(retain, options.batch_size, tokenizer.pad_token_id, seed + 1), rank, world)
        history, start = [], time.time()
        for step in range(options.steps):
            c_retain, c_reroute = rr_coefficients(step, options.steps, options.alpha)
            cb_batch, retain_batch = to_device(next(harmful_stream), device), to_device(next(retain_stream), device)
            with torch.no_grad(), accelerator.unwrap_model(lm).disable_adapter():
                orig_retain, orig_cb = hidden_states(lm, retain_batch), hidden_states(lm, cb_batch, layers)
            # one backward per forward, as DDP requires; the two gradients add up in .grad
            l_retain = representation_distance(hidden_states(lm, retain_batch), orig_retain, retain_batch["attention_mask"],
                                   relative=options.retain_distance == "relative_l2")
            accelerator.backward(c_retain * l_retain)
            cb_mask = cb_batch["attention_mask"] if options.reroute_tokens == "all" else cb_batch["labels"] != -100
            l_reroute = rerouting_loss(hidden_states(lm, cb_batch, layers), orig_cb, cb_mask)
            accelerator.backward(c_reroute * l_reroute)
            accelerator.clip_grad_norm_(lm.parameters(), options.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            loss = c_retain * l_retain.item() + c_reroute * l_reroute.item()
            history.append({"step": step + 1, "retain_loss": l_retain.item(), "rerouting_loss": l_reroute.item(),
                            "c_retain": c_retain, "c_reroute": c_reroute, "loss": loss})
            if accelerator.is_main_process and ((step + 1) % max(1, options.steps // 10) == 0 or step + 1 == options.steps):
                elapsed = time.time() - start
                report(f"step {step + 1}/{options.steps} rerouting {l_reroute.item():.3f} retain {l_retain.item():.3f} "
                       f"({elapsed:.0f}s, ETA {elapsed / (step + 1) * (options.steps - step - 1):.0f}s)")
        save_trained(accelerator, lm, Path(out))
        if accelerator.is_main_process:
            (Path(out) / "train_log.json").write_text(json.dumps(
                {"seconds": time.time() - start, "processes": world, "target_hidden_states": layers,
                 "history": history}, indent=2))
        return ModelRef(base_path, adapter=str(out), trust_remote_code=model.trust_remote_code)
