"""Everything TRL-specific about RL hardening lives here (a TRL upgrade touches this file only).

TRL's GRPOTrainer is the engine: sampling (HF generate, a sampling copy or the resident vLLM engine on a CPU:
training/rollout_engine.py; TRL's colocated vLLM on GPUs), the clipped
policy-gradient loss with the k3 KL penalty, LoRA through peft, accelerate/DeepSpeed. The
only change for FRPO is the advantage: `group_advantages` maps one group's total rewards to
per-sample advantages and replaces TRL's group-normalised ones. GRPO passes None and keeps TRL's.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from frpo_bench.defenses.rewards import BENIGN, HARMFUL, make_reward
from frpo_bench.models import ModelRef
from frpo_bench.models.device import on_accelerator
from frpo_bench.models.loading import load_for_training

GroupAdvantages = Callable[[np.ndarray], np.ndarray]
GroupStatistic = Callable[[np.ndarray], float]


def prompt_rows(options, tokenizer=None) -> list[dict]:
    """The RL prompts as TRL chats, harmful then benign, each tagged with its kind; with
    `max_prompt_length` (and a tokenizer), each request is cut from its start to fit."""
    from frpo_bench.data import ref_rows
    from frpo_bench.data.prompts import user_text
    cut = options.max_prompt_length and tokenizer is not None
    room = request_room(tokenizer, options.max_prompt_length) if cut else 0
    rows = []
    for ref, kind in ((options.harmful_prompts, HARMFUL), (options.benign_prompts, BENIGN)):
        for r in ref_rows(ref) if ref is not None else []:
            text = keep_last_tokens(tokenizer, user_text(r), room) if cut else user_text(r)
            rows.append({"prompt": [{"role": "user", "content": text}], "kind": kind})
    return rows


def request_room(tokenizer, limit: int) -> int:
    """Tokens left for the request in a templated prompt of at most `limit` tokens (TRL 0.21 cut the
    templated prompt's ids from the left; cutting the request instead keeps the chat template intact). The ids as a list:
    transformers 5 returns a dict by default, whose len() is its 2 keys."""
    overhead = len(tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=True,
                                                 add_generation_prompt=True, return_dict=False))
    return max(limit - overhead, 1)


def keep_last_tokens(tokenizer, text: str, room: int) -> str:
    """`text` cut from its start to its last `room` tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= room else tokenizer.decode(ids[-room:])


def grpo_config(options, out: Path, seed: int, world: int = 1):
    """TRL's GRPOConfig from the RL options. `prompts_per_step` is per optimizer step over all `world`
    processes (TRL's batch size is per process), so the same recipe trains the same way on 1 or 8 GPUs."""
    from trl import GRPOConfig

    from frpo_bench.training.tracking import report_to
    sequences = options.prompts_per_step * options.num_generations
    if sequences % world:
        from frpo_bench.errors import ConfigError
        raise ConfigError("prompts_per_step", options.prompts_per_step, f"x num_generations {options.num_generations} = "
                          f"{sequences} sequences per step do not split over {world} processes",
                          f"use a prompts_per_step that makes the product a multiple of {world}")
    return GRPOConfig(
        output_dir=str(out / "trainer"), max_steps=options.steps, seed=seed, data_seed=seed,
        per_device_train_batch_size=sequences // world, gradient_accumulation_steps=1, steps_per_generation=1,
        num_generations=options.num_generations, max_completion_length=options.max_completion_length,
        temperature=options.temperature, top_p=options.top_p, beta=options.beta,
        scale_rewards="group" if options.scale_rewards else "none", loss_type=options.loss_type,
        reward_weights=list(options.reward_weights), learning_rate=options.lr, lr_scheduler_type=options.lr_scheduler,
        warmup_steps=options.warmup_ratio, weight_decay=options.weight_decay, max_grad_norm=options.max_grad_norm,
        bf16=options.bf16, use_cpu=not on_accelerator(), use_vllm=options.use_vllm,
        vllm_mode="colocate",  # the engine inside the training process (TRL's "server" mode needs one started apart)
        vllm_importance_sampling_correction=options.vllm_importance_sampling_correction,
        use_bias_correction_kl=options.use_bias_correction_kl,
        logging_steps=1, save_strategy="no", report_to=report_to(), disable_tqdm=True, log_completions=False)


def _trainer_class():
    import torch
    from trl import GRPOTrainer

    class AdvantageGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose per-group advantages come from a pure function."""

        def __init__(self, *args, group_advantages: Optional[GroupAdvantages] = None,
                     group_statistics: Optional[dict[str, GroupStatistic]] = None,
                     sampling_copy: Optional[str] = None, rollout_engine=None, **kwargs):
            from frpo_bench.training.sampling_copy import SamplingCopy
            self._group_advantages = group_advantages
            self._group_statistics = group_statistics or {}
            self._last_rewards = None
            self._sampler = SamplingCopy(sampling_copy) if sampling_copy else None
            self._engine = rollout_engine
            super().__init__(*args, **kwargs)

        def _generate_single_turn(self, prompt_ids, *args, **kwargs):
            if self._engine is not None and not self.use_vllm:
                return self._engine_rollouts(prompt_ids), None  # no sampling log-probs, as TRL's HF path
            if self._sampler is None or self.use_vllm:
                return super()._generate_single_turn(prompt_ids, *args, **kwargs)
            policy = self.accelerator.unwrap_model(self.model_wrapped)
            wrapped, self.model_wrapped = self.model_wrapped, self._sampler.refresh(policy).to(self.accelerator.device)
            try:  # TRL's own generation path, pointed at the refreshed copy
                return super()._generate_single_turn(prompt_ids, *args, **kwargs)
            finally:
                self.model_wrapped = wrapped

        def _engine_rollouts(self, prompt_ids: list[list[int]]) -> list[list[int]]:
            from frpo_bench.training.rollout_engine import rollout_sampling, rollout_seeds
            sampling = rollout_sampling(self.max_completion_length, self.temperature, self.top_p, self.top_k,
                                        self.min_p, self.repetition_penalty, self.eos_token_ids)
            step = self.state.global_step
            seeds = rollout_seeds(self.args.seed + 7919 * self.accelerator.process_index, step, len(prompt_ids))
            policy = self.accelerator.unwrap_model(self.model_wrapped)
            return self._engine.rollouts(policy, step, prompt_ids, sampling, seeds)

        def _calculate_rewards(self, *args, **kwargs):
            self._last_rewards = super()._calculate_rewards(*args, **kwargs)  # gathered over processes
            return self._last_rewards

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            per_func = self._last_rewards
            totals = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
            totals[torch.isnan(per_func).all(dim=1)] = torch.nan
            groups = totals.view(-1, self.num_generations).cpu().double().numpy()
            mode = "train" if self.model.training else "eval"
            for name, statistic in self._group_statistics.items():
                values = [statistic(g) for g in groups if not np.isnan(g).any()]
                if values:
                    self._metrics[mode][name].append(float(np.mean(values)))
            if self._group_advantages is None:
                return out
            advantages = np.stack([np.zeros_like(g) if np.isnan(g).any() else self._group_advantages(g) for g in groups])
            flat = torch.tensor(advantages.reshape(-1), dtype=out["advantages"].dtype, device=out["advantages"].device)
            local = len(out["advantages"])
            start = self.accelerator.process_index * local
            out["advantages"] = flat[start: start + local]
            return out

    return AdvantageGRPOTrainer


def train_rl(model: ModelRef, out: Path, options, seed: int, group_advantages: Optional[GroupAdvantages],
             group_statistics: dict[str, GroupStatistic], report: Callable[[str], None],
             checkpoint_steps: Sequence[int] = (), stop_at: Optional[int] = None) -> ModelRef:
    """Train `model` by online RL on harmful (+ benign) prompts; returns an adapter or full weights in `out`. The
    model after each of `checkpoint_steps` is kept (a trajectory); `stop_at` ends the run after that step, its
    schedule unchanged (a search's rung)."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback

    out = Path(out)
    tokenizer, policy, base_path = load_for_training(model, out, options.lora is not None, padding_side="left")
    safety = make_reward(options.safety_reward, options)
    helpful = make_reward(options.helpfulness_reward, options)
    from frpo_bench.training.distributed import launched_rank
    config = grpo_config(options, out, seed, world=launched_rank()[1])
    peft_config = None
    if options.lora is not None:
        from frpo_bench.training.batches import peft_config as make_peft_config
        peft_config = make_peft_config(options.lora)
    history: list[dict] = []

    class Progress(TrainerCallback):
        start = time.time()

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "reward" not in logs:
                return
            logged = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
            if "num_tokens" in logged:  # TRL's running count of prompt and completion tokens, as SFT's logs name it
                logged["num_input_tokens_seen"] = int(logged["num_tokens"])
            history.append({"step": state.global_step, **logged})
            elapsed = time.time() - self.start
            eta = elapsed / max(state.global_step, 1) * (state.max_steps - state.global_step)
            extra = "".join(f" {k.split('/')[-1]} {float(logs[k]):.3f}" for k in logs if k.startswith("frpo/"))
            report(f"step {state.global_step}/{state.max_steps} reward {float(logs['reward']):.3f} "
                   f"zero-std groups {float(logs.get('frac_reward_zero_std', 0)):.2f} kl {float(logs.get('kl', 0)):.4f}"
                   f"{extra} ({elapsed:.0f}s, ETA {eta:.0f}s)")

    engine = None
    if options.rollout_engine:
        from frpo_bench.training.rollout_engine import RolloutEngine
        engine = RolloutEngine(options.sampling_copy_dtype(), tokenizer, report)
    from transformers import set_seed
    set_seed(seed)  # TRL wraps the policy in its LoRA before the Trainer seeds: the adapter's init follows the seed
    from frpo_bench.training.sft import checkpoint_callback, stop_callback
    callbacks = [Progress(), stop_callback(stop_at), checkpoint_callback(out, tokenizer, base_path, options.lora is not None,
                                                           model.trust_remote_code, checkpoint_steps, report)]
    trainer = _trainer_class()(
        model=policy, reward_funcs=[safety, helpful], args=config, train_dataset=Dataset.from_list(prompt_rows(options, tokenizer)),
        processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
        group_advantages=group_advantages, group_statistics=group_statistics,
        sampling_copy=options.sampling_copy_dtype() if options.sampling_copy else None, rollout_engine=engine)
    trainer.remove_callback(PrinterCallback)
    start = time.time()
    try:
        trainer.train()
    finally:
        if engine is not None:
            engine.close()
    seconds = time.time() - start
    trainer.model.config.use_cache = True  # saved for inference
    trainer.model.save_pretrained(out, safe_serialization=True)
    tokens = max((h["num_input_tokens_seen"] for h in history if "num_input_tokens_seen" in h), default=0)
    (out / "train_log.json").write_text(json.dumps({"seconds": seconds, "steps": trainer.state.global_step,
                                                    "planned_steps": options.steps, "tokens": tokens,
                                                    "history": history}, indent=2))
    shutil.rmtree(out / "trainer", ignore_errors=True)
    if options.lora is not None:
        return ModelRef(base_path, adapter=str(out), trust_remote_code=model.trust_remote_code)
    tokenizer.save_pretrained(out)
    return ModelRef(str(out), trust_remote_code=model.trust_remote_code)
