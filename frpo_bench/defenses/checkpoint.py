"""A released defended model as a defense: the cell's weights are the checkpoint's, by Hub id (pinned
revision) or local path, loaded through the same code as any model (safetensors only, remote code off).
E.g. GraySwanAI/Llama-3-8B-Instruct-RR or lapisrocks/Llama-3-8B-Instruct-TAR-Refusal beside their
undefended base, so published defenses enter the same grid of attacks and evaluators."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from frpo_bench.defenses.base import DefenseBase
from frpo_bench.models import ModelRef
from frpo_bench.typed import Options, opt


@dataclass
class CheckpointOptions(Options):
    model: str = opt(help="the defended model: Hub id or local directory (full weights or a LoRA adapter)")
    revision: Optional[str] = opt(None, help="pinned Hub revision (commit); recorded in the cache key")
    trust_remote_code: bool = opt(False, help="allow the checkpoint's own modelling code (off: untrusted)")

    def model_config(self):
        from frpo_bench.config import ModelConfig
        return ModelConfig(id=self.model, revision=self.revision, trust_remote_code=self.trust_remote_code)

    def preflight(self, path: str) -> None:
        """Before a run (not at parse time, so that `plan` works offline): the checkpoint must be loadable."""
        from frpo_bench.errors import ConfigError
        from frpo_bench.models.loading import preflight
        try:
            preflight(self.model_config())
        except ConfigError as err:  # name the defense's field, not the recipe's model
            raise ConfigError(f"{path}.model", self.model, err.problem, err.fix) from None

    def key_fields(self) -> dict:
        from frpo_bench.models.loading import source_fields
        return source_fields(self.model_config())


class CheckpointDefense(DefenseBase):
    """A released defended checkpoint in place of training a defense."""

    Options = CheckpointOptions

    def apply(self, model: ModelRef, out: Path, options: CheckpointOptions, seed: int, report=print) -> ModelRef:
        from frpo_bench.models.loading import materialize
        report(f"using released checkpoint {options.model}" + (f"@{options.revision}" if options.revision else ""))
        return materialize(options.model_config(), Path(out))
