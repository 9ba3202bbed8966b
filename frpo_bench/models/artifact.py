"""A model stored as an artifact: `model.json` names its weights and adapter, with paths inside the
artifact stored relative to it and paths into another artifact of the same store (a LoRA attack's base,
a checkpoint's weights) relative to the store's root, so a store can be moved or copied, and a copy
reads only its own files."""
from __future__ import annotations

import json
from pathlib import Path

from frpo_bench.files import MARKER, write_json_atomic
from frpo_bench.models import ModelRef

RELATIVE = "@artifact/"
IN_STORE = "@store/"  # an artifact sits at <store root>/<stage kind>/<key prefix>
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
        elif data[field] and data[field].startswith(IN_STORE):
            data[field] = str(artifact.parent.parent / data[field][len(IN_STORE):])
    return ModelRef.from_json(data)


def write_model(out: Path, ref: ModelRef, name: str = "model.json") -> None:
    """Record a model ref at out/name; paths inside `out` (a temporary build dir) become relative to the artifact,
    paths into other artifacts of its store relative to the store."""
    data = ref.to_json()
    store_root = out.resolve().parent.parent  # out is a build directory beside its artifact's final place
    in_a_store = (store_root / ".locks").is_dir()  # engine.store keeps its locks there
    for field in ("path", "adapter"):
        if not data[field]:
            continue
        path = Path(data[field]).resolve()
        if path.is_relative_to(out.resolve()):
            data[field] = RELATIVE + str(path.relative_to(out.resolve()))
        elif in_a_store and path.is_relative_to(store_root) and len(path.relative_to(store_root).parts) >= 2:
            data[field] = IN_STORE + str(path.relative_to(store_root))
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / name, data)


def is_model_artifact(folder: Path) -> bool:
    """A complete stored model (a defended or attacked model in a frpo-bench store)."""
    return (folder / "model.json").is_file() and (folder / MARKER).is_file()


def parameter_count(model_dir: str) -> int:
    """A checkpoint's parameter count, from its safetensors headers (no tensor is read)."""
    from safetensors import safe_open
    total = 0
    for file in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(file), "pt") as fh:
            for name in fh.keys():
                count = 1
                for dim in fh.get_slice(name).get_shape():
                    count *= dim
                total += count
    return total
