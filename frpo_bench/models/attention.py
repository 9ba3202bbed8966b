"""`generation.attention: auto` for the HF backend: the attention kernel that measures fastest here.

transformers defaults to PyTorch's SDPA. On this project's 2-core AVX512-BF16 CPUs SDPA in bf16 is slow on a
generation's shapes (Xeon: 50 ms against eager's 19 ms; EPYC: 67 against 24), and eager pays for copying every
key/value head to its query heads at each decode step; `grouped` (models/grouped_attention.py) is eager without
that copy. The probe times the kernels on the attention shapes of one generation (a 60-token prefill and 32 decode
steps, batch 48, 9 query heads over 3 key/value heads of 64, the heads repeated where transformers repeats them)
in the compute dtype, in a child process (planning imports no torch), cached per machine beside the dtype probe;
another kernel than SDPA is chosen when it takes under 70% of SDPA's time. The chosen kernel enters the
generation key (kernels differ in rounding), so cached completions always name it.
`FRPO_BENCH_AUTO_ATTENTION=sdpa|eager|grouped` pins what auto means.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

from frpo_bench.files import write_json_atomic
from frpo_bench.models.precision import forced_choice, gpu_visible, probe_path

MARGIN_OVER_SDPA = 0.7  # another kernel must take under 70% of SDPA's time (fp32 here: eager 80%, whole generation equal)
KERNELS = ("sdpa", "eager", "grouped")  # what the probe times and auto may resolve to
CHOICES = (*KERNELS, "auto")
AUTO_ENV = "FRPO_BENCH_AUTO_ATTENTION"  # one of KERNELS: what auto resolves to (to reproduce another machine's keys)


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
    forced = forced_choice(AUTO_ENV, KERNELS, "kernel")
    if forced:
        return forced, f"{AUTO_ENV}={forced}"
    if device.startswith("cuda") or (device == "auto" and gpu_visible()):
        return "sdpa", "a GPU (flash / memory-efficient kernels)"
    path = attention_probe_path()
    times = json.loads(path.read_text()) if path.is_file() else {}
    if set(times.get(dtype, {})) != set(KERNELS):  # a probe from before a kernel was added measures again
        out = subprocess.run([sys.executable, "-m", "frpo_bench.models.attention", dtype], capture_output=True,
                             text=True, timeout=300, check=True)
        times[dtype] = json.loads(out.stdout)
        write_json_atomic(path, times)
    best = choose(times[dtype])
    measured = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in times[dtype].items())
    return best, (f"measured on this CPU ({dtype}): {measured} (another kernel than SDPA only under "
                  f"{MARGIN_OVER_SDPA:.0%} of its time); cached in {path}")


def choose(times: dict[str, float]) -> str:
    """The fastest kernel of a probe's `times`, SDPA (transformers' default) unless another beats it by the margin."""
    other = min((k for k in times if k != "sdpa"), key=times.get)
    return other if times[other] < MARGIN_OVER_SDPA * times["sdpa"] else "sdpa"



def _probe(dtype_name: str, batch: int = 48, heads: int = 9, kv_heads: int = 3, dim: int = 64, prompt: int = 60,
           new: int = 32, rounds: int = 5) -> dict:
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv

    from frpo_bench.models.grouped_attention import grouped_attention_forward
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    shapes = [(prompt, prompt)] + [(1, prompt + i + 1) for i in range(new)]
    data = [(torch.randn(batch, heads, q, dim, dtype=dtype), torch.randn(batch, kv_heads, kv, dim, dtype=dtype),
             torch.randn(batch, kv_heads, kv, dim, dtype=dtype), torch.zeros(batch, 1, q, kv, dtype=dtype))
            for q, kv in shapes]

    def repeat(x):  # every query head gets its own copy of its key/value head, as transformers makes it
        return repeat_kv(x, heads // kv_heads)

    def sdpa(q, k, v, mask):  # with a padding mask on a CPU, transformers repeats the heads for SDPA too
        return torch.nn.functional.scaled_dot_product_attention(q, repeat(k), repeat(v), attn_mask=mask)

    def eager(q, k, v, mask):  # transformers' eager attention
        weights = torch.softmax(torch.matmul(q, repeat(k).transpose(2, 3)) * dim ** -0.5 + mask, dim=-1,
                                dtype=torch.float32)
        return torch.matmul(weights.to(dtype), repeat(v))

    def grouped(q, k, v, mask):
        return grouped_attention_forward(None, q, k, v, mask, dim ** -0.5)

    times = {}
    for name, kernel in (("sdpa", sdpa), ("eager", eager), ("grouped", grouped)):
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
