"""What the pair-trained defenses (RepNoise, Booster, Vaccine) share around their own step: the model to train
(full weights or a new LoRA adapter) with its optimizer under accelerate, progress lines, and the saved result."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frpo_bench.models import ModelRef


@dataclass
class DefenseRun:
    accelerator: Any
    tokenizer: Any
    lm: Any  # prepared by accelerate (the module to call and step)
    optimizer: Any
    base_path: str  # the weights a new adapter applies to (the model itself when training full weights)
    lora: bool
    steps: int
    bf16: bool = False
    start: float = field(default_factory=time.time)
    history: list = field(default_factory=list)

    @property
    def model(self):
        """The unwrapped model (its config, modules and output head)."""
        return self.accelerator.unwrap_model(self.lm)

    def autocast(self):
        """bf16 autocast over the fp32 weights for the forward passes, when the options ask for it."""
        import torch
        return torch.autocast(device_type=self.accelerator.device.type, dtype=torch.bfloat16, enabled=bool(self.bf16))

    def trainable(self) -> list:
        return [p for p in self.lm.parameters() if p.requires_grad]

    def log(self, step: int, record: dict, line: str, report) -> None:
        """Keep the step's record; every tenth of the run (and at the end) say where it is."""
        self.history.append({"step": step, **record})
        if self.accelerator.is_main_process and (step % max(1, self.steps // 10) == 0 or step == self.steps):
            elapsed = time.time() - self.start
            report(f"step {step}/{self.steps} {line} ({elapsed:.0f}s, ETA {elapsed / step * (self.steps - step):.0f}s)")

    def finish(self, model: ModelRef, out: Path, extra: dict) -> ModelRef:
        """Write the weights (or the adapter) and train_log.json; the defended model."""
        from frpo_bench.training.distributed import save_trained
        save_trained(self.accelerator, self.lm, Path(out), None if self.lora else self.tokenizer)
        if self.accelerator.is_main_process:
            (Path(out) / "train_log.json").write_text(json.dumps(
                {"seconds": time.time() - self.start, "processes": self.accelerator.num_processes, **extra,
                 "history": self.history}, indent=2))
        if self.lora:
            return ModelRef(self.base_path, adapter=str(out), trust_remote_code=model.trust_remote_code)
        return ModelRef(str(out), trust_remote_code=model.trust_remote_code)


def start_run(model: ModelRef, out: Path, lora, lr: float, steps: int, seed: int, weight_decay: float = 0.0,
              bf16: bool = False) -> DefenseRun:
    """Load `model` to train (a new LoRA adapter when `lora` is given, else every weight), with AdamW."""
    import torch

    from frpo_bench.models.loading import load_for_training
    from frpo_bench.training.batches import peft_config
    from frpo_bench.training.distributed import make_accelerator
    torch.manual_seed(seed)
    accelerator = make_accelerator()
    tokenizer, lm, base_path = load_for_training(model, Path(out), new_adapter=lora is not None, padding_side="right")
    if lora is not None:
        from peft import get_peft_model
        lm = get_peft_model(lm, peft_config(lora))
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    lm, optimizer = accelerator.prepare(lm, optimizer)
    return DefenseRun(accelerator, tokenizer, lm, optimizer, base_path, lora is not None, steps, bf16)


def pair_features(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """Tokenized (prompt, response) rows for training; an error when none survives `max_length`."""
    from frpo_bench.training.batches import tokenize_pairs
    features = tokenize_pairs(tokenizer, rows, max_length)
    if not features:
        raise ValueError(f"none of {len(rows)} training rows has an answer token within max_length {max_length}")
    return features

