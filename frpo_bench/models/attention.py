"""`generation.attention: auto` for the HF backend: the attention kernel that measures faster here.

transformers defaults to PyTorch's SDPA. On this project's 2-core AVX512-BF16 CPU, SDPA in bf16 took
50 ms where the eager kernel (matmul, softmax in fp32, matmul) took 19 ms on a generation's attention
shapes, and whole HF generation (48 prompts x 32 tokens) ran 1.35x faster with eager; other CPUs and
GPUs differ. The probe times both kernels on the attention shapes of one generation (a 60-token
prefill and 32 decode steps, batch 48, 9 heads of 64) in the compute dtype, in a child process
(planning imports no torch), cached per machine beside the dtype probe; eager is chosen when it takes
under 70% of SDPA's time. The chosen kernel enters the generation key (kernels differ in rounding), so
cached completions always name it. `FRPO_BENCH_AUTO_ATTENTION=sdpa|eager` pins what auto means.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

from frpo_bench.files import write_json_atomic
from frpo_bench.models.precision import forced_choice, gpu_visible, probe_path

EAGER_MARGIN = 0.7  # eager must take under 70% of SDPA's time (fp32 here: 80%, and whole generation equal)
CHOICES = ("sdpa", "eager", "auto")
AUTO_ENV = "FRPO_BENCH_AUTO_ATTENTION"  # sdpa|eager: what auto resolves to, e.g. to reproduce another machine's keys


class AttentionOption:
    """Mixin for HF-inference options with an `attention` kernel that may be `auto`: checked at parse time,
    resolved (after `dtype`, at that dtype) before planning, so a cache key names the kernel that ran."""

    def check_attention(self, path: str) -> None:
        from frpo_bench.errors import ConfigError
        if self.attention not in CHOICES:
            raise ConfigError(f"{path}.attention", self.attention, "is not an attention kernel", f"use one of {CHOICES}")

    def resolve_attention(self, path: str, device: str, backend: str = "hf") -> dict[str, str]:
        if self.attention != "auto":
            return {}
        if backend != "hf":
            self.attention, why = "sdpa", f"the {backend} backend chooses its own kernels"
        else:
            self.attention, why = resolve_attention("auto", self.dtype, device)
        return {f"{path}.attention": f"auto -> {self.attention} ({why})"}


def attention_probe_path():
    return probe_path().with_name(probe_path().name.replace("dtype-probe", "attention-probe"))


def resolve_attention(requested: str, dtype: str, device: str) -> tuple[str, str]:
    """(kernel, why) for `requested` (auto | sdpa | eager) at the resolved generation `dtype`."""
    if requested != "auto":
        return requested, "set in the recipe"
    forced = forced_choice(AUTO_ENV, CHOICES[:-1], "kernel")
    if forced:
        return forced, f"{AUTO_ENV}={forced}"
    if device.startswith("cuda") or (device == "auto" and gpu_visible()):
        return "sdpa", "a GPU (flash / memory-efficient kernels)"
    path = attention_probe_path()
    times = json.loads(path.read_text()) if path.is_file() else {}
    if dtype not in times:
        out = subprocess.run([sys.executable, "-m", "frpo_bench.models.attention", dtype], capture_output=True,
                             text=True, timeout=300, check=True)
        times[dtype] = json.loads(out.stdout)
        write_json_atomic(path, times)
    sdpa, eager = times[dtype]["sdpa"], times[dtype]["eager"]
    best = "eager" if eager < EAGER_MARGIN * sdpa else "sdpa"
    return best, (f"measured on this CPU ({dtype}): sdpa {sdpa * 1e3:.1f} ms, eager {eager * 1e3:.1f} ms (eager only "
                  f"under {EAGER_MARGIN:.0%} of SDPA's time); cached in {path}")


def _probe(dtype_name: str, batch: int = 48, heads: int = 9, dim: int = 64, prompt: int = 60, new: int = 32,
           rounds: int = 5) -> dict:
    import torch
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    shapes = [(prompt, prompt)] + [(1, prompt + i + 1) for i in range(new)]
    data = [(torch.randn(batch, heads, q, dim, dtype=dtype), torch.randn(batch, heads, kv, dim, dtype=dtype),
             torch.randn(batch, heads, kv, dim, dtype=dtype), torch.zeros(batch, 1, q, kv, dtype=dtype))
            for q, kv in shapes]

    def sdpa(q, k, v, mask):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def eager(q, k, v, mask):  # transformers' eager attention
        weights = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * dim ** -0.5 + mask, dim=-1, dtype=torch.float32)
        return torch.matmul(weights.to(dtype), v)

    times = {}
    for name, kernel in (("sdpa", sdpa), ("eager", eager)):
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for q, k, v, mask in data:
                kernel(q, k, v, mask)
            best = min(best, time.perf_counter() - start)
        times[name] = best
    return times


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1])))
