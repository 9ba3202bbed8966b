"""`dtype: auto`: bf16 on a GPU; on a CPU, whichever of fp32 and bf16 a short probe measures faster on
this very machine (CPUs differ: on one with AVX2 only a bf16 matmul ran ~100x slower than fp32, on one
with AVX512-BF16 4.3x faster). The probe runs once per machine, in a child process (planning imports
no torch), and its result is cached under the store's root by a signature of the CPU and torch.
`FRPO_BENCH_AUTO_DTYPE=float32|bfloat16` makes `auto` resolve to that, e.g. to reproduce another
machine's cache keys; deleting the cached probe (its path is in the manifest's reason) measures again.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata

from frpo_bench.files import default_cache_dir, write_json_atomic

AUTO_ENV = "FRPO_BENCH_AUTO_DTYPE"
BF16_MARGIN = 0.8  # bf16 must take under 80% of fp32's time to be chosen
CHOICES = ("float32", "bfloat16")


def gpu_visible() -> bool:
    """An NVIDIA device node, without importing torch."""
    return any(os.path.exists(f"/dev/nvidia{i}") for i in range(16))


def machine_signature() -> dict:
    flags, model = set(), ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "none"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"cpu": model, "flags": sorted(flags & set(wanted)), "cores": os.cpu_count(), "torch": torch_version}


def probe_path():
    digest = hashlib.sha256(json.dumps(machine_signature(), sort_keys=True).encode()).hexdigest()[:16]
    return default_cache_dir() / "machine" / f"dtype-probe-{digest}.json"


def cpu_probe() -> dict:
    """{purpose: {dtype: seconds}} for inference and training, measured once per machine (cached)."""
    path = probe_path()
    if path.is_file():
        return json.loads(path.read_text())
    out = subprocess.run([sys.executable, "-m", "frpo_bench.models.precision"], capture_output=True, text=True,
                         timeout=300, check=True)
    result = {**json.loads(out.stdout), "machine": machine_signature()}
    write_json_atomic(path, result)
    return result


def forced_choice(env: str, choices, what: str) -> str | None:
    """What an environment variable forces `auto` to become (None: unset), checked against `choices`."""
    forced = os.environ.get(env)
    if forced and forced not in choices:
        from frpo_bench.errors import ConfigError
        raise ConfigError(env, forced, f"is not a {what} `auto` can become",
                          f"set it to one of {', '.join(choices)}, or unset it to let the machine decide")
    return forced or None


def resolve_dtype(requested: str, purpose: str, device: str) -> tuple[str, str]:
    """(dtype, why) for a requested dtype; `auto` resolved for `purpose` (inference | training) on the
    recipe's `device` (auto | cpu | cuda[:N])."""
    if requested != "auto":
        return requested, "set in the recipe"
    forced = forced_choice(AUTO_ENV, CHOICES, "dtype")
    if forced:
        return forced, f"{AUTO_ENV}={forced}"
    if device.startswith("cuda") or (device == "auto" and gpu_visible()):
        return "bfloat16", "a GPU"
    times = cpu_probe()[purpose]
    # bf16 only when clearly faster: a near tie keeps float32, whose results are exact
    best = "bfloat16" if times["bfloat16"] < BF16_MARGIN * times["float32"] else "float32"
    return best, (f"measured on this CPU ({purpose}): float32 {times['float32'] * 1e3:.1f} ms, "
                  f"bfloat16 {times['bfloat16'] * 1e3:.1f} ms; cached in {probe_path()}")


DTYPES = ("float32", "bfloat16", "float16", "auto")


class DtypeOption:
    """Mixin for options with a compute `dtype` that may be `auto`: checked at parse time, resolved by
    the engine before planning (so a cache key names the dtype that ran), recorded in the manifest."""

    def check_dtype(self, path: str) -> None:
        from frpo_bench.errors import ConfigError
        if self.dtype not in DTYPES:
            raise ConfigError(f"{path}.dtype", self.dtype, "is not a dtype", f"use one of {DTYPES}")

    def resolve_installed(self, path: str, device: str) -> dict[str, str]:
        if self.dtype != "auto":
            return {}
        self.dtype, why = resolve_dtype("auto", "inference", device)
        return {f"{path}.dtype": f"auto -> {self.dtype} ({why})"}


def bf16_option():
    """The `bf16` field of a trainer's options (checked and resolved by Bf16Option)."""
    from frpo_bench.typed import opt
    return opt(False, help="bf16 autocast over fp32 weights: true, false, or auto (true on a GPU; on a CPU whichever "
                           "a probe measures faster there: on an AVX2-only CPU a LoRA step of SmolLM2 ran ~30x "
                           "slower under bf16, on an AVX512-BF16 one 1.7x faster)")


class Bf16Option:
    """Mixin for training options with `bf16: true | false | auto` (bf16 autocast over fp32 weights):
    auto is resolved by the engine before planning, for training, on the recipe's device."""

    def check_bf16(self, path: str) -> None:
        from frpo_bench.errors import ConfigError
        if isinstance(self.bf16, str) and self.bf16 != "auto":
            raise ConfigError(f"{path}.bf16", self.bf16, "is not true, false or auto", "write true, false or auto")

    def resolve_installed(self, path: str, device: str) -> dict[str, str]:
        if self.bf16 != "auto":
            return {}
        dtype, why = resolve_dtype("auto", "training", device)
        self.bf16 = dtype == "bfloat16"
        return {f"{path}.bf16": f"auto -> {str(self.bf16).lower()} ({why})"}


def _probe(rounds: int = 5) -> dict:
    """Seconds of a SmolLM2-sized MLP stack: a decode-like forward (16 rows) for inference, a forward and
    backward over 512 rows (bf16 autocast over fp32 weights, as the trainers run it) for training. The
    two dtypes alternate, round by round, so that other load on the machine hits both alike; the best
    round of each counts."""
    import time

    import torch
    torch.manual_seed(0)
    width, hidden = 576, 1536
    fp32 = torch.nn.Sequential(*[m for _ in range(4) for m in (torch.nn.Linear(width, hidden), torch.nn.SiLU(),
                                                               torch.nn.Linear(hidden, width))])
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    rows, batch = torch.randn(16, width), torch.randn(512, width)

    def infer(model, dtype):
        with torch.inference_mode():
            for _ in range(20):
                model(rows.to(dtype))

    def train(autocast):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = fp32(batch).float().pow(2).mean()
        loss.backward()

    work = {("inference", "float32"): lambda: infer(fp32, torch.float32),
            ("inference", "bfloat16"): lambda: infer(bf16, torch.bfloat16),
            ("training", "float32"): lambda: train(False), ("training", "bfloat16"): lambda: train(True)}
    best = {key: float("inf") for key in work}
    for fn in work.values():
        fn()  # warm-up
    for _ in range(rounds):
        for key, fn in work.items():
            start = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - start)
    return {purpose: {dtype: best[(purpose, dtype)] for dtype in CHOICES} for purpose in ("inference", "training")}


if __name__ == "__main__":
    print(json.dumps(_probe()))
