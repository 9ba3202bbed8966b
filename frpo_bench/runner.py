"""Execute a plan: run each missing stage into the store, with progress (stage, cell, ETA)."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from frpo_bench import registry
from frpo_bench.errors import StageError
from frpo_bench.models import ModelRef
from frpo_bench.plan import Stage
from frpo_bench.store import Store, write_json_atomic

# Rough seconds per stage on a 2-core CPU with the embedded model: only for the first ETA,
# replaced by this run's own measurements as stages finish.
PRIOR_SECONDS = {"base": 40, "align": 200, "harden": 300, "attack": 60, "generate": 30, "score": 2}
PRIOR_LM_EVAL_SECONDS = 90


def read_model(stage_dir: Path) -> ModelRef:
    data = json.loads((stage_dir / "model.json").read_text())
    for field in ("path", "adapter"):  # paths inside the artifact are stored relative to it
        if data[field] and data[field].startswith("@artifact/"):
            data[field] = str(stage_dir / data[field][len("@artifact/"):])
    return ModelRef.from_json(data)


def write_model(out: Path, ref: ModelRef) -> None:
    """Record a model ref; paths inside `out` (a temporary build dir) become relative to the artifact."""
    data = ref.to_json()
    for field in ("path", "adapter"):
        if data[field] and Path(data[field]).resolve().is_relative_to(out.resolve()):
            data[field] = "@artifact/" + str(Path(data[field]).resolve().relative_to(out.resolve()))
    write_json_atomic(out / "model.json", data)


def user_text(row: dict) -> str:
    """A prompt row as the user turn; contextual behaviors carry their context first (as HarmBench does)."""
    if row.get("context"):
        return f"{row['context']}\n\n---\n\n{row['prompt']}"
    return row["prompt"]


def run_base(stage: Stage, out: Path, parents: list[Path], report) -> None:
    from frpo_bench.models.loading import materialize
    write_model(out, materialize(stage.payload["model"], out))


def run_align(stage: Stage, out: Path, parents: list[Path], report) -> None:
    from frpo_bench.attacks.finetune import finetune
    cfg = stage.payload["cfg"]
    write_model(out, finetune(read_model(parents[0]), out, cfg, lr=cfg.lr, seed=cfg.seed, merge=True, report=report))


def run_harden(stage: Stage, out: Path, parents: list[Path], report) -> None:
    defense = stage.payload["defense"]
    impl = registry.load("defense", defense.type)()
    write_model(out, impl.apply(read_model(parents[0]), out, defense.options, seed=stage.payload["seed"], report=report))


def run_attack(stage: Stage, out: Path, parents: list[Path], report) -> None:
    attack = stage.payload["attack"]
    impl = registry.load("attack", attack.type)()
    ref = impl.apply(read_model(parents[0]), out, attack, lr=stage.payload["lr"], seed=stage.payload["seed"], report=report)
    write_model(out, ref)


def run_generate(stage: Stage, out: Path, parents: list[Path], report) -> None:
    from frpo_bench.data import ref_rows
    gen, ref = stage.payload["generation"], stage.payload["prompts"]
    rows = ref_rows(ref)
    generator = registry.load("generator", gen.backend)(report=report)
    start = time.time()
    completions = generator.generate(read_model(parents[0]), [user_text(r) for r in rows], gen, seed=stage.payload["seed"])
    with open(out / "completions.jsonl", "w") as fh:
        for row, completion in zip(rows, completions):
            fh.write(json.dumps({**row, "completion": completion}) + "\n")
    write_json_atomic(out / "generation.json", {"seconds": time.time() - start, "n": len(rows)})


def run_score(stage: Stage, out: Path, parents: list[Path], report) -> None:
    from frpo_bench.data import get
    from frpo_bench.evaluators.base import ScoreInputs, bootstrap_ci
    ev = stage.payload["evaluation"]
    evaluator = registry.load("evaluator", ev.evaluator)()
    spec = get(ev.prompts.dataset)
    if evaluator.needs_completions:
        rows = [json.loads(line) for line in (parents[0] / "completions.jsonl").read_text().splitlines()]
        completions = [r.pop("completion") for r in rows]
        generation, extra = stage.parents[0].fields["generation"], {}
    else:
        rows, completions, generation, extra = [], None, {}, {"limit": ev.prompts.n}
    inputs = ScoreInputs(rows, completions, read_model(stage.payload["model_dir"]), spec.harmful, spec.name,
                         ev.prompts.split, generation, out)
    result = evaluator.score(inputs, ev.options, **extra)
    metrics = []
    for m in result.metrics:
        low, high = bootstrap_ci(m.per_sample)
        metrics.append({"metric": f"{ev.metric}:{m.suffix}" if m.suffix else ev.metric, "value": m.value,
                        "n": len(m.per_sample), "ci95": [low, high], "higher_is_better": m.higher_is_better,
                        "unit": m.unit, "per_sample": m.per_sample})
    with open(out / "samples.jsonl", "w") as fh:
        for record in result.records:
            fh.write(json.dumps(record) + "\n")
    meta = {**result.meta, "evaluator": ev.evaluator, "version": evaluator.version, "dataset": spec.name,
            "split": ev.prompts.split, "dataset_revision": spec.revision if spec.files else spec.content_id, "dataset_source": spec.source}
    write_json_atomic(out / "result.json", {"metrics": metrics, "meta": meta})


EXECUTORS: dict[str, Callable] = {"base": run_base, "align": run_align, "harden": run_harden, "attack": run_attack,
                                  "generate": run_generate, "score": run_score}


class Progress:
    """Prints one line per stage with its position, the cell it belongs to, and an ETA."""

    def __init__(self, stages: list[Stage], stream=None, quiet: bool = False):
        self.stream, self.total, self.done, self.quiet = stream or sys.stderr, len(stages), 0, quiet
        self.remaining = list(stages)
        self.measured: dict[str, list[float]] = {}
        self.start = time.time()

    def estimate(self, stage: Stage) -> float:
        times = self.measured.get(stage.kind)
        if times:
            return sum(times) / len(times)
        if stage.kind == "score" and stage.parents and stage.parents[0].kind != "generate":
            return PRIOR_LM_EVAL_SECONDS
        return PRIOR_SECONDS.get(stage.kind, 30)

    def eta(self) -> str:
        seconds = sum(self.estimate(s) for s in self.remaining)
        return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"

    def begin(self, stage: Stage) -> None:
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {stage.kind:8s} {stage.label}  (elapsed {time.time() - self.start:.0f}s, "
                 f"ETA {self.eta()})")

    def end(self, stage: Stage, seconds: float) -> None:
        self.measured.setdefault(stage.kind, []).append(seconds)
        self.remaining.remove(stage)
        self.say(f"      done in {seconds:.1f}s")

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)


def execute(stages: list[Stage], store: Store) -> dict[str, Path]:
    """Run every stage not yet in the store; return key -> artifact directory for all stages."""
    from frpo_bench.defenses.distributed import launched_rank
    rank = launched_rank()[0]  # under `accelerate launch` every process trains; only rank 0 writes the store
    todo = [s for s in stages if not store.has(s.kind, s.key)]
    progress = Progress(todo, quiet=rank > 0)
    progress.say(f"{len(stages)} stages: {len(stages) - len(todo)} cached, {len(todo)} to run (store: {store.root})")
    for stage in todo:
        if stage.kind != "generate":
            release_generation_engines()
        progress.begin(stage)
        parents = [store.path(p.kind, p.key) for p in stage.parents]
        if stage.kind == "score":
            stage.payload["model_dir"] = store.path(stage.payload["model_stage"].kind, stage.payload["model_stage"].key)
        started = time.time()
        spec = {"label": stage.label, "fields": stage.fields, "parents": [p.key for p in stage.parents]}
        try:
            with store.building(stage.kind, stage.key, spec) if rank == 0 else scratch_dir() as out:
                EXECUTORS[stage.kind](stage, out, parents, lambda msg: progress.say(f"      {msg}"))
                spec["seconds"] = time.time() - started  # stage.json is written as the block closes
        except KeyboardInterrupt:
            raise
        except Exception as err:
            raise StageError(f"{stage.kind} stage '{stage.label}' failed: {err.__class__.__name__}: {err}. "
                             f"Finished stages are kept in {store.root}; run again to resume.") from err
        progress.end(stage, time.time() - started)
    release_generation_engines()
    return {s.key: store.path(s.kind, s.key) for s in stages}


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """Where a non-main process of a distributed stage writes (and forgets) what rank 0 stores."""
    with tempfile.TemporaryDirectory(prefix="frpo-bench-rank-") as tmp:
        yield Path(tmp)


def base_model(cfg, store: Store) -> ModelRef:
    """The starting weights of `cfg` (a ModelConfig) through the store, under the key a plan gives them,
    so scripts share the conversion a run already did."""
    from frpo_bench.models.loading import source_fields
    from frpo_bench.store import stage_key
    key = stage_key("base", source_fields(cfg), [])
    if not store.has("base", key):
        stage = Stage("base", key, cfg.id, source_fields(cfg), [], {"model": cfg})
        with store.building("base", key, {"label": cfg.id, "fields": stage.fields, "parents": []}) as out:
            run_base(stage, out, [], print)
    return read_model(store.path("base", key))


def release_generation_engines() -> None:
    """A vLLM engine lives across generation stages; stop it before training or scoring needs the memory."""
    module = sys.modules.get("frpo_bench.models.generate_vllm")
    if module is not None:
        module.release()


def seconds_by_kind(stages: list[Stage], store: Store) -> dict[str, float]:
    """Compute time each stage kind took when it was built (cached stages keep their original time)."""
    totals: dict[str, float] = {}
    for stage in stages:
        info = json.loads((store.path(stage.kind, stage.key) / "stage.json").read_text())
        totals[stage.kind] = totals.get(stage.kind, 0.0) + info.get("seconds", 0.0)
    return {kind: round(seconds, 1) for kind, seconds in totals.items()}
