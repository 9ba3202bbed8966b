"""What the benchmark scripts share: the starting weights of a model, through the store."""
from __future__ import annotations

from frpo_bench.engine.plan import Stage
from frpo_bench.engine.stages import run_base
from frpo_bench.engine.store import Store, stage_key
from frpo_bench.models import ModelRef
from frpo_bench.models.artifact import read_model
from frpo_bench.models.loading import source_fields


def base_model(cfg, store: Store) -> ModelRef:
    """The starting weights of `cfg` (a ModelConfig) under the key a plan gives them, so a benchmark
    shares the conversion a run already did (and a run shares the benchmark's)."""
    key = stage_key("base", source_fields(cfg), [])
    if not store.has("base", key):
        stage = Stage("base", key, cfg.id, source_fields(cfg), [], payload={"model": cfg})
        with store.building("base", key, {"label": cfg.id, "fields": stage.fields, "parents": []}) as out:
            run_base(stage, out, lambda s: store.path(s.kind, s.key), print)
    return read_model(store.path("base", key))
