"""Supervised fine-tuning, full or LoRA, through transformers' Trainer.

The same code runs the demo's safety alignment and the fine-tuning attacks. Loss is on response
tokens only (the prompt is masked), sequences are padded per batch (never to a global maximum),
and batches group similar lengths.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from frpo_bench.models import ModelRef
from frpo_bench.models.artifact import CHECKPOINTS, checkpoint_record, write_model
from frpo_bench.models.device import on_accelerator
from frpo_bench.models.loading import load_for_training
from frpo_bench.training.batches import pad_batch, peft_config, tokenize_pairs

EPOCH_RNG = "epoch_rng.pt"


def torch_load(path: Path):
    import torch
    return torch.load(path, weights_only=True)


@dataclass(frozen=True)
class WarmStart:
    """Where a run stopped early keeps its trainer state (`keep`: weights, optimizer, schedule, RNG), and the
    state a longer run of the same plan resumes from (`resume`, used when it is there): the resumed run
    trains only the steps after it, to the same weights as a run from step 0."""

    keep: Optional[Path] = None
    resume: Optional[Path] = None

    def resumable(self) -> Optional[Path]:
        if self.resume is None or self.resume.is_symlink():  # a state is the store's own, never a planted link
            return None
        return self.resume if (self.resume / "trainer_state.json").is_file() else None


def training_rows(cfg) -> list[dict]:
    from frpo_bench.data import ref_rows
    from frpo_bench.data.mix import poisoned_mix

    def pairs(refs) -> list[dict]:
        # math rows (GSM8K format) train as question -> worked answer
        return [row if "prompt" in row else {"prompt": row["question"], "response": row["answer"]}
                for ref in refs for row in ref_rows(ref)]
    rows, poison = pairs(cfg.data), cfg.poison
    rows = rows if poison is None else poisoned_mix(rows, pairs(poison.data), poison.harmful_rows(), poison.n, poison.seed)
    return cfg.training_rows(rows)


def finetune(model: ModelRef, out: Path, cfg, lr: float, seed: int, merge: bool = False,
             report: Callable[[str], None] = print, checkpoint_steps: Sequence[int] = (),
             stop_at: int | None = None, warm: WarmStart = WarmStart()) -> ModelRef:
    """Fine-tune `model` on cfg.data; returns full weights in `out`, or a LoRA adapter there.

    With `merge`, a LoRA is merged and full weights are saved (the aligned base is a plain model).
    A model that is itself base + adapter is merged first, so the new training starts from it.
    After each step in `checkpoint_steps` the model so far is saved under out/checkpoints/step-N and its
    record written at `checkpoint_record(N)` (saving reads the weights only: the run goes on unchanged).
    With `stop_at`, training ends after that step of the cfg.steps-step run (its schedule unchanged), so the
    model returned is that run's model at `stop_at` (a search's early-stopped trial); `warm` keeps its state
    for, or resumes from, another stop of the same run.
    """
    from transformers import PrinterCallback, Trainer, TrainerCallback

    out = Path(out)
    tokenizer, lm, base_path = load_for_training(model, out, cfg.lora is not None and not merge, padding_side="right")
    if cfg.lora is not None:
        from peft import get_peft_model
        from transformers import set_seed
        set_seed(seed)  # the adapter's initial weights come from the stage's seed: same key, same bytes
        lm = get_peft_model(lm, peft_config(cfg.lora))
    features = tokenize_pairs(tokenizer, training_rows(cfg), cfg.max_length, cfg.system_prompt)
    if not features:
        raise ValueError(f"no training pair keeps a response token within max_length={cfg.max_length} "
                         "(every prompt fills it): raise max_length")
    wanted = set(checkpoint_steps)
    checkpoints = checkpoint_callback(out, tokenizer, base_path, cfg.lora is not None, model.trust_remote_code,
                                      checkpoint_steps, report)


    resume = warm.resumable()
    resumed = json.loads((resume / "trainer_state.json").read_text()) if resume else {}
    if resume and min(wanted, default=cfg.steps + 1) <= resumed["global_step"]:
        resume, resumed = None, {}  # a checkpoint the run must keep lies before the saved state: from step 0

    class EpochOrder(TrainerCallback):
        """The Trainer draws an epoch's order from torch's global generator as the epoch begins, and a resumed
        run skips into the epoch with the generator as seeded: it gets the generator of that epoch's start back."""
        def __init__(self):
            saved = resume / EPOCH_RNG if resume else None
            self.restore = torch_load(saved) if saved and saved.is_file() else None
            self.at_begin = None

        def on_epoch_begin(self, args, state, control, **kw):
            import torch
            if self.restore is not None:
                torch.set_rng_state(self.restore)
                self.restore = None
            self.at_begin = torch.get_rng_state()

    class Progress(TrainerCallback):
        def __init__(self):
            self.start = time.time()

        def on_log(self, args, state, control, logs=None, **kw):
            shown = state.global_step % max(1, state.max_steps // 10) == 0 or state.global_step == state.max_steps
            if logs and "loss" in logs and shown:
                elapsed = time.time() - self.start
                eta = elapsed / max(state.global_step, 1) * (state.max_steps - state.global_step)
                report(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.3f} ({elapsed:.0f}s, ETA {eta:.0f}s)")

    def collate(batch):
        return pad_batch(batch, tokenizer.pad_token_id)

    args = training_arguments(cfg, out, lr, seed)
    trainer = Trainer(model=lm, args=args, train_dataset=_ListDataset(features), data_collator=collate,
                      callbacks=[Progress(), checkpoints, stop_callback(stop_at, save=warm.keep is not None),
                                 epoch_order := EpochOrder()])
    trainer.remove_callback(PrinterCallback)  # our Progress line replaces its raw dict dumps
    start = time.time()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.time() - start
    lm = trainer.model
    lm.config.use_cache = True  # saved for inference
    if cfg.lora is not None and merge:
        lm = lm.merge_and_unload()
    lm.save_pretrained(out, safe_serialization=True)
    tokens = trainer.state.num_input_tokens_seen - resumed.get("num_input_tokens_seen", 0)  # this run's own steps
    log = {"seconds": seconds, "steps": trainer.state.global_step, "planned_steps": cfg.steps,
           "resumed_from_step": resumed.get("global_step", 0), "tokens": tokens, "tokens_per_second": tokens / max(seconds, 1e-9),
           "examples": len(features), "history": trainer.state.log_history}
    (out / "train_log.json").write_text(json.dumps(log, indent=2))
    keep_state(out / "trainer" / f"checkpoint-{trainer.state.global_step}", warm.keep, epoch_order.at_begin)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    if cfg.lora is not None and not merge:
        return ModelRef(base_path, adapter=str(out), trust_remote_code=model.trust_remote_code)
    tokenizer.save_pretrained(out)
    return ModelRef(str(out), trust_remote_code=model.trust_remote_code)


def checkpoint_callback(out: Path, tokenizer, base_path: str, lora: bool, trust: bool, steps: Sequence[int],
                        report: Callable[[str], None]):
    """A Trainer callback that saves the model after each of `steps` under out/checkpoints/step-N (an adapter
    on `base_path` with LoRA, else full weights) and writes its record (`checkpoint_record`): a trajectory's
    points; saving reads the weights only, so the run goes on unchanged."""
    from transformers import TrainerCallback
    wanted = set(steps)

    class Checkpoints(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step not in wanted:
                return
            folder = out / CHECKPOINTS / f"step-{state.global_step}"
            model.save_pretrained(folder, safe_serialization=True)
            if lora:
                ref = ModelRef(base_path, adapter=str(folder), trust_remote_code=trust)
            else:
                tokenizer.save_pretrained(folder)
                ref = ModelRef(str(folder), trust_remote_code=trust)
            write_model(out, ref, checkpoint_record(state.global_step))
            report(f"kept the model after step {state.global_step}")
    return Checkpoints()


def stop_callback(stop_at: Optional[int], save: bool = False):
    """A Trainer callback that ends the run after step `stop_at` (None: never), its schedule unchanged (a search's
    rung); with `save`, the Trainer saves its full state under out/trainer for the next stop to resume from."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if stop_at is not None and state.global_step >= stop_at:
                control.should_training_stop = True
                control.should_save = save
    return StopAt()


def keep_state(saved: Path, keep: Optional[Path], epoch_rng) -> None:
    """Move the Trainer's saved state to `keep` (outside the artifact: it is a cache the next stop may use),
    with the generator as the current epoch began."""
    if keep is None or not saved.is_dir():
        return
    import torch
    torch.save(epoch_rng, saved / EPOCH_RNG)
    keep.parent.mkdir(parents=True, exist_ok=True)
    if keep.is_symlink():  # unlinked, never followed: the state must not land where a link points
        keep.unlink()
    shutil.rmtree(keep, ignore_errors=True)
    shutil.move(str(saved), str(keep))


def training_arguments(cfg, out: Path, lr: float, seed: int):
    """The Trainer's settings from a FinetuneConfig (every optimisation field reaches it)."""
    from transformers import TrainingArguments

    from frpo_bench.training.tracking import report_to
    return TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=cfg.steps, learning_rate=lr, seed=seed, data_seed=seed,
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.batch_size // cfg.micro_batch_size, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, bf16=cfg.bf16, use_cpu=not on_accelerator(),
        train_sampling_strategy="group_by_length", logging_steps=1, include_num_input_tokens_seen="non_padding",  # every step's loss: the attack's loss curve
        save_strategy="no", report_to=report_to(), remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True,
        logging_nan_inf_filter=False)  # a non-finite loss is logged as it is (the filter showed a diverged run as 0.000)


class _ListDataset:
    """A list of token dicts with the lengths the length-grouped sampler asks for."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


