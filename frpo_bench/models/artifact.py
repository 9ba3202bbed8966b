"""A model stored as an artifact: `model.json` names its weights and adapter, with paths inside the
artifact stored relative to it, so a store can move (or be shared) without breaking its models."""
from __future__ import annotations

import json
from pathlib import Path

from frpo_bench.files import MARKER, write_json_atomic
from frpo_bench.models import ModelRef

RELATIVE = "@artifact/"
CHECKPOINTS = "checkpoints"  # inside a training stage's artifact: the models it kept at intermediate steps


def checkpoint_record(step: int) -> str:
    """Where, inside a training stage's artifact, the record of its model after `step` optimizer steps is."""
    return f"{CHECKPOINTS}/step-{step}.json"


def read_model(artifact: Path, name: str = "model.json") -> ModelRef:
    """The model an artifact holds (`name`: another model record inside it, e.g. a training checkpoint's)."""
    data = json.loads((artifact / name).read_text())
    for field in ("path", "adapter"):
        if data[field] and data[field].startswith(RELATIVE):
            data[field] = str(artifact / data[field][len(RELATIVE):])
    return ModelRef.from_json(data)


def write_model(out: Path, ref: ModelRef, name: str = "model.json") -> None:
    """Record a model ref at out/name; paths inside `out` (a temporary build dir) become relative to the artifact."""
    data = ref.to_json()
    for field in ("path", "adapter"):
        if data[field] and Path(data[field]).resolve().is_relative_to(out.resolve()):
            data[field] = RELATIVE + str(Path(data[field]).resolve().relative_to(out.resolve()))
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / name, data)


def is_model_artifact(folder: Path) -> bool:
    """A complete stored model (a defended or attacked model in a frpo-bench store)."""
    return (folder / "model.json").is_file() and (folder / MARKER).is_file()
