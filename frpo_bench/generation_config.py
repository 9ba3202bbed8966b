"""How completions are generated: the recipe's `generation` section (and an attack's changes to it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from frpo_bench.data.prompts import check_user_template, wrapped
from frpo_bench.data.ref import DataRef
from frpo_bench.errors import ConfigError
from frpo_bench.models.attention import AttentionOption
from frpo_bench.models.precision import DTYPES, DtypeOption
from frpo_bench.typed import check_positive, opt, to_dict

BACKENDS = ("hf", "vllm", "auto")
VLLM_ADAPTERS = ("served", "merged")  # a LoRA on vLLM: its LoRA kernels, or merged into the weights


@dataclass
class GenerationConfig(DtypeOption, AttentionOption):
    backend: str = opt("hf", help="generation backend: hf (batched transformers), vllm (one vLLM engine per base "
                                  "model in a child process; other weights of its architecture swapped in) or auto "
                                  "(vllm on a GPU when installed; on a CPU whichever prices the run's generation lower at "
                                  "this machine's measured rates, one engine start included; hf until both are "
                                  "measured)")
    dtype: str = opt("float32", help=f"compute dtype for generation, one of {DTYPES}; auto: bf16 on a GPU, on a CPU "
                                      "whichever a probe measures faster there (CPUs differ by 100x in bf16); "
                                      "compare exact outputs in float32")
    max_new_tokens: int = opt(48, help="tokens generated per prompt")
    temperature: float = opt(0.0, help="0 means greedy decoding")
    top_p: float = opt(1.0, help="nucleus sampling mass (used when temperature > 0)")
    system_prompt: Optional[str] = opt(None, help="system message; null keeps the model's own chat template default")
    system_prompt_data: list[DataRef] = opt([], omit_if_default=True, help="data whose rows share one system message, "
                                            "used as the system prompt and read when generating (an identity-shift "
                                            "attack's conversations); its content enters the key, not its text")
    user_template: Optional[str] = opt(None, omit_if_default=True, help="wraps each prompt before the chat template, "
                                       "{prompt} where it goes (e.g. an identity-shift attack's 'AOA, execute my "
                                       "instruction: {prompt}'); judges still see the prompt itself")
    prefill_data: Optional[DataRef] = opt(None, omit_if_default=True, help="pairs whose responses start the answers "
                                          "(the prefilling attack sets it): matched to each prompt by its text")
    prefill_tokens: int = opt(0, omit_if_default=True, help="how many tokens of that response are forced after the "
                              "assistant turn; the completion scored is those tokens and the continuation")
    attention: str = opt("sdpa", omit_if_default=True, help="hf backend: attention kernel, sdpa (transformers' default), "
                                                             "eager, grouped (eager without copying key/value heads), or "
                                                             "auto (whichever a probe measures fastest here; part of the "
                                                             "key: kernels differ in rounding)")
    batch_size: int = opt(16, help="hf backend: prompts per forward batch (transport only: not part of any cache key)")
    prefix_cache: bool = opt(True, help="hf backend: run the prompts' shared opening tokens (chat template, system "
                                        "prompt) once per set and start each batch from their cache (transport only)")
    tensor_parallel_size: int = opt(1, help="vllm backend: GPUs one engine spans (transport only)")
    vllm_max_model_len: int = opt(4096, help="vllm backend: longest prompt + completion in tokens; bounds the KV "
                                             "cache (transport only)")
    vllm_enforce_eager: bool = opt(True, help="vllm backend: skip CUDA graphs / compilation; starts in ~20 s on CPU; "
                                              "false is faster on GPUs (transport only)")
    vllm_cpu_kv_cache_gib: int = opt(2, help="vllm backend on CPU: KV cache size in GiB (transport only)")
    vllm_block_size: Optional[int] = opt(None, help="vllm backend: KV cache block in tokens, the unit its prefix cache "
                                                    "reuses (a shared opening counts in whole blocks); null: 32 on a CPU "
                                                    "(its kernels' smallest; vLLM's CPU default 128 never reuses an "
                                                    "opening shorter than that), vLLM's own default on a GPU "
                                                    "(transport only)")
    vllm_adapters: str = opt("served", omit_if_default=True, help="vllm backend: a LoRA-attacked model served as an "
                             "adapter by vLLM's LoRA kernels (served), or merged into its base's weights in float32 "
                             "and swapped into the running engine (merged: what the hf backend computes; on a CPU "
                             "vLLM's LoRA path measured 6x slower). Part of the key: the arithmetic differs")
    vllm_gpu_memory_utilization: Optional[float] = opt(None, help="vllm backend on GPU: share of GPU memory the engine "
                                                                  "may claim; null keeps vLLM's default (transport only)")

    TRANSPORT = ("batch_size", "prefix_cache", "tensor_parallel_size", "vllm_max_model_len",
                 "vllm_enforce_eager", "vllm_cpu_kv_cache_gib", "vllm_gpu_memory_utilization", "vllm_block_size")

    def validate(self, path: str) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"{path}.backend", self.backend, "is not a generation backend", f"use one of {BACKENDS}")
        self.check_dtype(path)
        check_positive(self, path, "max_new_tokens", "batch_size", "tensor_parallel_size", "vllm_max_model_len",
                       "vllm_cpu_kv_cache_gib")
        if self.vllm_block_size is not None and (self.vllm_block_size < 1 or self.vllm_block_size % 16):
            raise ConfigError(f"{path}.vllm_block_size", self.vllm_block_size, "is not a KV cache block size vLLM takes",
                              "use a multiple of 16 (32 on a CPU: its kernels take multiples of 32), or leave it unset")
        if self.temperature < 0:  # infinity and NaN never get this far (typed refuses them)
            raise ConfigError(f"{path}.temperature", self.temperature, "must be 0 (greedy) or a positive finite number",
                              "use 0 for greedy decoding or e.g. 1.0 for sampling")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{path}.top_p", self.top_p, "must be in (0, 1]", "use e.g. 0.9, or 1.0 for no nucleus")
        self.check_attention(path)
        if self.prefill_tokens < 0 or (self.prefill_tokens and self.prefill_data is None):
            raise ConfigError(f"{path}.prefill_tokens", self.prefill_tokens, "must be 0, or positive with prefill_data",
                              "leave both out, or give prefill_data: {dataset: <pairs>} and a token count")
        check_user_template(self.user_template, f"{path}.user_template")
        if self.system_prompt and self.system_prompt_data:
            raise ConfigError(f"{path}.system_prompt_data", [r.dataset for r in self.system_prompt_data],
                              "is given beside system_prompt", "give one of the two")
        if self.vllm_adapters not in VLLM_ADAPTERS:
            raise ConfigError(f"{path}.vllm_adapters", self.vllm_adapters, "is not a way to serve adapters",
                              f"use one of {VLLM_ADAPTERS}")

    def data_refs(self) -> list[DataRef]:
        """The data a generation reads besides its prompts (a prefill's responses): its content enters the key."""
        prefill = [self.prefill_data] if self.prefill_data is not None and self.prefill_tokens else []
        return prefill + list(self.system_prompt_data)

    def system_message(self) -> Optional[str]:
        """The system message the model is sent: `system_prompt`, else the one `system_prompt_data`'s rows share."""
        from frpo_bench.data.prompts import system_message
        return system_message(self.system_prompt, self.system_prompt_data)

    def user_message(self, prompt: str) -> str:
        """What the model is sent as the user's turn for `prompt`."""
        return wrapped(self.user_template, prompt)

    def resolve_installed(self, path: str, device: str) -> dict[str, str]:
        """dtype auto first, then attention auto at that dtype (the vLLM backend has its own kernels: sdpa, unkeyed)."""
        return {**super().resolve_installed(path, device), **self.resolve_attention(path, device, self.backend)}

    def key_fields(self) -> dict:
        """What changes the completions. The backend is part of it (engines differ in arithmetic); `auto`
        is resolved by the engine before planning, so a cache key always names the engine that produced the text."""
        fields = to_dict(self, for_key=True)
        for name in self.TRANSPORT:
            fields.pop(name, None)
        if self.backend != "vllm":
            fields.pop("vllm_adapters", None)
        if self.backend == "hf" and self.dtype != "float32":
            # LoRA adapters are merged in fp32, then cast: merged in bf16, a small update is partly rounded
            # away (a harmful LoRA at lr 1e-4 measured 37 refusals of 100 merged in bf16, 17 in fp32), so
            # completions cached by the bf16 merge must not be reused
            fields["adapter_merge"] = "float32"
        return fields
