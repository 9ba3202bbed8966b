"""The typed options of supervised fine-tuning and LoRA, shared by the fine-tuning attack, the safety
alignment and the defenses that train adapters (what `training.sft` and `training.batches` read)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from frpo_bench.data.ref import DataRef
from frpo_bench.errors import ConfigError
from frpo_bench.models.precision import Bf16Option, bf16_option
from frpo_bench.typed import Options, check_positive, opt, to_dict
from frpo_bench.work import Train, TrainMemory, Work, sft_tokens

SCHEDULERS = ("constant", "linear", "cosine", "constant_with_warmup")


@dataclass
class LoraConfig:
    r: int = opt(16, help="LoRA rank")
    alpha: int = opt(32, help="LoRA alpha (scale = alpha / r)")
    dropout: float = opt(0.0, help="LoRA dropout")
    target_modules: list[str] = opt(["all-linear"], help="module names to adapt; 'all-linear' adapts every linear projection")

    def validate(self, path: str) -> None:
        check_positive(self, path, "r", "alpha")
        if not self.target_modules:
            raise ConfigError(f"{path}.target_modules", self.target_modules, "is empty",
                              "list module names, or use [all-linear]")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{path}.dropout", self.dropout, "must be in [0, 1)", "use e.g. 0.0 or 0.05")


@dataclass
class PoisonConfig:
    """The poisoned-mix protocol of Vaccine, Booster and Lisa (Huang et al.): n training rows of which a share p
    are harmful pairs, the rest drawn from the attack's own (benign) data."""

    data: list[DataRef] = opt(help="harmful pairs to mix in (the field's protocol: BeaverTails harmful pairs)")
    share: float = opt(help="p: the share of harmful rows, in [0, 1]; round(p x n) rows (halves round up) are harmful")
    n: int = opt(help="n: rows in the training set, benign and harmful together")
    seed: int = opt(0, help="seed of the rows drawn (the same for every training seed, so seeds vary training only)")

    def validate(self, path: str) -> None:
        if not 0 <= self.share <= 1:
            raise ConfigError(f"{path}.share", self.share, "must be in [0, 1]", "use e.g. 0.1 (10% harmful rows)")
        check_positive(self, path, "n")
        if not self.data:
            raise ConfigError(f"{path}.data", self.data, "is empty", "list the harmful pairs to mix in")

    def harmful_rows(self) -> int:
        return int(self.share * self.n + 0.5)


@dataclass
class FinetuneConfig(Bf16Option, Options):
    """Supervised fine-tuning on (prompt, response) pairs: the options of the fine-tuning attack, and
    the safety alignment's settings."""

    data: list[DataRef] = opt(help="datasets mixed for training (prompt -> response pairs)")
    lora: Optional[LoraConfig] = opt(None, help="LoRA settings; null means full fine-tuning")
    poison: Optional[PoisonConfig] = opt(None, omit_if_default=True, help="train on a poisoned mix instead: n rows, "
                                         "a share p of them harmful pairs, the rest drawn from `data`")
    system_prompt: Optional[str] = opt(None, omit_if_default=True, help="system message of every training "
                                       "conversation, and of the attacked model's evaluation; null: none, or a "
                                       "training row's own (`system`, as the identity-shift data has)")
    steps: int = opt(30, help="optimizer steps")
    batch_size: int = opt(8, help="sequences per optimizer step (changes results)")
    micro_batch_size: Optional[int] = opt(None, help="sequences per forward pass; gradient accumulation makes up the rest; "
                                                     "null means the whole batch at once (transport only)")
    max_length: int = opt(256, help="truncate prompt + response to this many tokens")
    lr_scheduler: str = opt("constant", help=f"one of {', '.join(SCHEDULERS)}")
    warmup_ratio: float = opt(0.0, help="share of steps for linear warm-up, in [0, 1)")
    weight_decay: float = opt(0.0, help="AdamW weight decay")
    max_grad_norm: float = opt(1.0, help="gradient clipping norm")
    bf16: Union[bool, str] = bf16_option()

    def validate(self, path: str) -> None:
        if self.micro_batch_size is None:
            self.micro_batch_size = self.batch_size
        check_positive(self, path, "steps", "batch_size", "micro_batch_size", "max_length", "max_grad_norm")
        check_warmup_ratio(self, path)
        self.check_bf16(path)
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(f"{path}.micro_batch_size", self.micro_batch_size, "must divide batch_size",
                              f"use a divisor of {self.batch_size}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ConfigError(f"{path}.lr_scheduler", self.lr_scheduler, "is not a known schedule", f"use one of {SCHEDULERS}")
        if not self.data:
            raise ConfigError(f"{path}.data", self.data, "is empty", "list at least one dataset to train on")

    def key_fields(self) -> dict:
        fields = to_dict(self, for_key=True)
        fields.pop("micro_batch_size")  # transport only: same effective batch, same result
        return fields

    def data_refs(self) -> list["DataRef"]:
        return list(self.data) + (list(self.poison.data) if self.poison else [])

    def training_rows(self, rows: list[dict]) -> list[dict]:
        """The (prompt, response) rows trained on, from the rows `data` (or the poisoned mix) gives: as they are
        here; an attack whose options transform its data (jailbreak-tuning) overrides it."""
        return rows

    def planned_steps(self) -> int:
        return self.steps

    def sft_work(self) -> Work:
        """Supervised fine-tuning: load, train, write; peak memory at one micro-batch of full-length sequences."""
        lora = self.lora is not None
        micro = self.micro_batch_size or self.batch_size
        return Work(loads=2, steps=(Train(sft_tokens(self.steps, self.batch_size, self.max_length), self.steps, lora,
                                          self.bf16 is True),),
                    memory=(TrainMemory(micro * self.max_length, full=not lora),))

def check_warmup_ratio(cfg, path: str) -> None:
    """A share of the steps: transformers 5 reads a warmup_steps below 1 as a ratio, 1 and above as steps."""
    if not 0 <= cfg.warmup_ratio < 1:
        raise ConfigError(f"{path}.warmup_ratio", cfg.warmup_ratio, "must be in [0, 1)",
                          "give the share of steps for warm-up, e.g. 0.1")
