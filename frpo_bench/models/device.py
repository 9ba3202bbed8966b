"""Where model work runs: one device rule for every stage that runs a model.

The recipe's `device` (auto | cpu | cuda | cuda:N; transport only, never in a cache key) is set once
per run by the engine (`use_device`); loading, generation, judges, reward models, lm-eval and the
trainers read it (`compute_device`). `auto` is the first CUDA device when torch sees one, else the
CPU. Models load straight onto that device in their compute dtype, so a 7B model never passes
through an fp32 copy in host memory.
"""
from __future__ import annotations

import re

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
_chosen = {"device": "auto"}


def check_device(name: str) -> bool:
    return bool(DEVICE_PATTERN.fullmatch(name))


def use_device(name: str) -> None:
    """Set the device for the model work of this process (the recipe's `device`)."""
    _chosen["device"] = name


def compute_device() -> str:
    """The device model work runs on: 'cpu' or 'cuda:N' (auto resolved against what torch sees)."""
    import torch
    name = _chosen["device"]
    if name == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for, but torch sees no CUDA device")
        return name if ":" in name else "cuda:0"
    return name


def on_accelerator() -> bool:
    return compute_device() != "cpu"


def device_map() -> dict | None:
    """from_pretrained's device_map that loads every weight onto the compute device (None on the CPU,
    where transformers' default already places them)."""
    device = compute_device()
    return None if device == "cpu" else {"": device}


def reset_peak_memory() -> str:
    """Start a stage's peak-memory window: the accelerator's allocator peak, or this process's peak
    resident set (VmHWM, reset through /proc/self/clear_refs where the kernel allows it). Returns what the
    peak read afterwards covers: "stage", or the whole process when the host's peak could not be reset."""
    import torch
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError as err:
        if not on_accelerator():
            return f"process (its peak could not be reset: {err.strerror or err})"
    return "stage"


def peak_memory_bytes() -> int:
    """The stage's peak memory on its device: CUDA allocator peak, else the host's peak resident set."""
    import torch
    if on_accelerator():
        return int(torch.cuda.max_memory_allocated(compute_device()))
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def empty_cache() -> None:
    """Return the accelerator allocator's cached blocks (after dropping models); nothing on a CPU."""
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
