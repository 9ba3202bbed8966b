"""`generation.backend: auto` on a CPU, by this machine's own measurements: the resident vLLM engine when a run's
generation work pays for its start, else HF.

Every generation of at least `MIN_RECORDED_FLOP` records what it did (backend, dtype, matmul FLOPs of the tokens it
generated, seconds) and every engine start its seconds, in a file per machine beside the dtype probe. A run's
choice then prices its generate stages both ways at those rates: HF at its measured FLOP/s, vLLM at its own plus one
engine start (one engine per base and process: models/generate_vllm.py). FLOP rates carry over between model sizes
better than tokens/s; batch shapes still differ between runs, so the figures are the mix this machine has seen.
Until both backends have been measured here, `auto` stays HF and says how to measure.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from frpo_bench.files import write_json_atomic

MIN_RECORDED_FLOP = 1e11  # smaller generations (tiny test models) time overheads, not the engine
STARTS_KEPT = 5
MEASURE_HINT = ("run a recipe once with generation.backend: vllm and once with hf on this machine (or "
                "`python benchmarks/resident_engine.py`), and auto chooses from those figures")


def figures_path():
    from frpo_bench.models.precision import probe_path
    return probe_path().with_name(probe_path().name.replace("dtype-probe", "generation-rates"))


def read_figures() -> dict:
    path = figures_path()
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):  # a torn or foreign file: measure again
        return {}


@functools.lru_cache(maxsize=8)
def parameters(model_dir: str) -> int:
    """A checkpoint's parameter count, from its safetensors headers."""
    from frpo_bench.models.artifact import parameter_count
    return parameter_count(model_dir)


def record_generation(backend: str, dtype: str, parameters: float, tokens: int, seconds: float) -> None:
    """Add one generation's work to this machine's figures (no-op below MIN_RECORDED_FLOP)."""
    flop = 2.0 * parameters * tokens
    if flop < MIN_RECORDED_FLOP or seconds <= 0:
        return
    figures = read_figures()
    entry = figures.setdefault(dtype, {}).setdefault(backend, {"flop": 0.0, "seconds": 0.0})
    entry["flop"] += flop
    entry["seconds"] += seconds
    write_json_atomic(figures_path(), figures)


def record_engine_start(dtype: str, seconds: float) -> None:
    figures = read_figures()
    entry = figures.setdefault(dtype, {}).setdefault("vllm", {"flop": 0.0, "seconds": 0.0})
    entry["starts"] = (entry.get("starts", []) + [round(seconds, 1)])[-STARTS_KEPT:]
    write_json_atomic(figures_path(), figures)


@dataclass
class Pricing:
    hf_s: float
    vllm_s: float
    start_s: float


def price(flop: float, engines: int, rates: dict) -> Pricing | None:
    """Seconds of `flop` generation FLOPs with each backend at `rates` (one dtype's figures), `engines` starts for
    vLLM; None until both backends and a start have been measured."""
    hf, vllm = rates.get("hf", {}), rates.get("vllm", {})
    if not (hf.get("seconds") and vllm.get("seconds") and vllm.get("starts")):
        return None
    start = max(vllm["starts"])  # the slowest start seen: the choice errs towards HF
    return Pricing(flop * hf["seconds"] / hf["flop"], engines * start + flop * vllm["seconds"] / vllm["flop"], start)


def choose(flop: float, engines: int, dtype: str, figures: dict) -> tuple[str, str]:
    """(backend, why) for a run's generation work of `flop` FLOPs on `engines` engine starts."""
    priced = price(flop, engines, figures.get(dtype, {}))
    if priced is None:
        return "hf", f"on a CPU with no measurement of both backends at {dtype} here yet: {MEASURE_HINT}"
    backend = "vllm" if priced.vllm_s < priced.hf_s else "hf"
    return backend, (f"this run's generation ({flop / 1e12:.1f} TFLOP at {dtype}) priced at this CPU's measured "
                     f"rates: hf {priced.hf_s:.0f} s, one resident vLLM engine {priced.vllm_s:.0f} s with "
                     f"{engines} start(s) of {priced.start_s:.0f} s; figures in {figures_path()}")
