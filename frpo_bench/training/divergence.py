"""Whether a training stage diverged: non-finite values in the weights it wrote, or in the losses it logged.
A diverged model generates garbage that a judge may score as anything, so it must never pass as a result."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

RECORD = "diverged.json"  # in an attack's artifact: why its weights cannot be trusted


class Diverged(RuntimeError):
    """A stage whose training produced non-finite weights or losses."""


def nonfinite_weights(folder: Path) -> dict[str, int]:
    """tensor name -> how many of its values are NaN or infinite, over every safetensors file under `folder`."""
    import torch
    from safetensors import safe_open
    found: dict[str, int] = {}
    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                if tensor.is_floating_point():
                    bad = int((~torch.isfinite(tensor)).sum())
                    if bad:
                        found[f"{path.relative_to(folder)}:{name}"] = bad
    return found


def nonfinite_losses(folder: Path) -> list[int]:
    """The steps whose logged training loss is NaN or infinite (train_log.json under `folder`, if any)."""
    path = folder / "train_log.json"
    if not path.is_file():
        return []
    history = json.loads(path.read_text(encoding="utf-8")).get("history", [])
    return [h.get("step", -1) for h in history if isinstance(h.get("loss"), (int, float)) and not math.isfinite(h["loss"])]


def divergence(folder: Path) -> Optional[str]:
    """One line saying how the training written to `folder` diverged, or None when its weights and losses are finite."""
    weights, losses = nonfinite_weights(folder), nonfinite_losses(folder)
    if not weights and not losses:
        return None
    parts = []
    if weights:
        worst = max(weights, key=weights.get)
        parts.append(f"{sum(weights.values()):,} non-finite weights in {len(weights)} tensors (most in {worst})")
    if losses:
        parts.append(f"a non-finite loss at {len(losses)} steps (first: step {losses[0]})")
    return "; ".join(parts)


def record_divergence(folder: Path, why: str) -> None:
    (folder / RECORD).write_text(json.dumps({"diverged": why}) + "\n")


def recorded_divergence(folder: Path) -> Optional[str]:
    path = folder / RECORD
    return json.loads(path.read_text(encoding="utf-8"))["diverged"] if path.is_file() else None
