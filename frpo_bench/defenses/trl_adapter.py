"""Everything TRL-specific about RL hardening lives here (a TRL upgrade touches this file only).

TRL's GRPOTrainer is the engine: sampling (HF generate here, vLLM on GPUs), the clipped
policy-gradient loss with the k3 KL penalty, LoRA through peft, accelerate/DeepSpeed. The
only change for FRPO is the advantage: `group_advantages` maps one group's total rewards to
per-sample advantages and replaces TRL's group-normalised ones. GRPO passes None and keeps TRL's.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from frpo_bench.defenses.rewards import BENIGN, HARMFUL, make_reward
from frpo_bench.models import ModelRef
from frpo_bench.models.device import on_accelerator
from frpo_bench.models.loading import load_for_training

GroupAdvantages = Callable[[np.ndarray], np.ndarray]
GroupStatistic = Callable[[np.ndarray], float]


def prompt_rows(options) -> list[dict]:
    from frpo_bench.data import ref_rows
    from frpo_bench.data.prompts import user_text
    rows = []
    for ref, kind in ((options.harmful_prompts, HARMFUL), (options.benign_prompts, BENIGN)):
        rows += [{"prompt": [{"role": "user", "content": user_text(r)}], "kind": kind}
                 for r in ref_rows(ref)]
    return rows


def _trainer_class():
    import torch
    from trl import GRPOTrainer

    class AdvantageGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose per-group advantages come from a pure function."""

        def __init__(self, *args, group_advantages: Optional[GroupAdvantages] = None,
                     group_statistics: Optional[dict[str, GroupStatistic]] = None, **kwargs):
            self._group_advantages = group_advantages
            self._group_statistics = group_statistics or {}
            self._last_rewards = None
            super().__init__(*args, **kwargs)

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
             group_statistics: dict[str, GroupStatistic], report: Callable[[str], None]) -> ModelRef:
    """Harden `model` by online RL on harmful + benign prompts; returns an adapter or full weights in `out`."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig

    out = Path(out)
    tokenizer, policy, base_path = load_for_training(model, out, options.lora is not None, padding_side="left")
    safety = make_reward(options.safety_reward)
    helpful = make_reward(options.helpfulness_reward, options.reward_model, options.reward_model_revision)
    batch = options.prompts_per_step * options.num_generations
    config = GRPOConfig(
        output_dir=str(out / "trainer"), max_steps=options.steps, seed=seed, data_seed=seed,
        per_device_train_batch_size=batch, gradient_accumulation_steps=1, steps_per_generation=1,
        num_generations=options.num_generations, max_completion_length=options.max_completion_length,
        temperature=options.temperature, top_p=options.top_p, beta=options.beta,
        scale_rewards="group" if options.scale_rewards else "none", loss_type=options.loss_type,
        reward_weights=list(options.reward_weights), learning_rate=options.lr, lr_scheduler_type=options.lr_scheduler,
        warmup_steps=options.warmup_ratio, weight_decay=options.weight_decay, max_grad_norm=options.max_grad_norm,
        bf16=options.bf16, use_cpu=not on_accelerator(), use_vllm=options.use_vllm,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, log_completions=False)
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
            history.append({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})
            elapsed = time.time() - self.start
            eta = elapsed / max(state.global_step, 1) * (state.max_steps - state.global_step)
            extra = "".join(f" {k.split('/')[-1]} {float(logs[k]):.3f}" for k in logs if k.startswith("frpo/"))
            report(f"step {state.global_step}/{state.max_steps} reward {float(logs['reward']):.3f} "
                   f"zero-std groups {float(logs.get('frac_reward_zero_std', 0)):.2f} kl {float(logs.get('kl', 0)):.4f}"
                   f"{extra} ({elapsed:.0f}s, ETA {eta:.0f}s)")

    from transformers import set_seed
    set_seed(seed)  # TRL wraps the policy in its LoRA before the Trainer seeds: the adapter's init follows the seed
    trainer = _trainer_class()(
        model=policy, reward_funcs=[safety, helpful], args=config, train_dataset=Dataset.from_list(prompt_rows(options)),
        processing_class=tokenizer, peft_config=peft_config, callbacks=[Progress()],
        group_advantages=group_advantages, group_statistics=group_statistics)
    trainer.remove_callback(PrinterCallback)
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    trainer.model.config.use_cache = True  # saved for inference
    trainer.model.save_pretrained(out, safe_serialization=True)
    (out / "train_log.json").write_text(json.dumps({"seconds": seconds, "history": history}, indent=2))
    shutil.rmtree(out / "trainer", ignore_errors=True)
    if options.lora is not None:
        return ModelRef(base_path, adapter=str(out), trust_remote_code=model.trust_remote_code)
    tokenizer.save_pretrained(out)
    return ModelRef(str(out), trust_remote_code=model.trust_remote_code)
