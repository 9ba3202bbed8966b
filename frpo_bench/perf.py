"""This machine's own compute ceiling, for stating throughput as a fraction of it."""
from __future__ import annotations

import time


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul in `dtype_name` on all threads torch uses (best of `repeats`)."""
    import torch
    from frpo_bench.models.loading import torch_dtype
    a = torch.randn(size, size).to(torch_dtype(dtype_name))
    b = torch.randn(size, size).to(torch_dtype(dtype_name))
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def parameter_count(model_dir: str) -> int:
    from pathlib import Path
    from safetensors import safe_open
    total = 0
    for file in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(file), "pt") as fh:
            for name in fh.keys():
                total += _prod(fh.get_slice(name).get_shape())
    return total


def _prod(shape) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out
