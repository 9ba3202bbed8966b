"""The Generator interface: one call generates completions for a whole prompt set."""
from __future__ import annotations

from typing import Protocol, Sequence

from frpo_bench.models import ModelRef


class Generator(Protocol):
    def generate(self, model: ModelRef, prompts: Sequence[str], cfg, seed: int = 0) -> list[str]:
        """Return one completion per user prompt, in input order.

        `cfg` is a GenerationConfig: the model's own chat template wraps each prompt (with
        `cfg.system_prompt` if set); temperature 0 means greedy. Batching is the backend's
        business and must not change greedy results beyond numerical noise of the dtype.
        """
        ...
