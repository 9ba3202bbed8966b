"""Execute a plan: run each missing stage into the store, with progress (stage, cell, ETA)."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from frpo_bench.engine.eta import CostPrior, History, expected_seconds
from frpo_bench.engine.plan import Stage, build_summary, stages_to_build
from frpo_bench.engine.stages import BY_NAME, GenerationBatches, StageContext, prior_seconds, stage_dtype, stage_size
from frpo_bench.engine.store import INCOMPLETE, Store
from frpo_bench.errors import StageError, raise_if_stopped


class Progress:
    """Prints one line per stage with its position, the cell it belongs to, and an ETA."""

    def __init__(self, stages: list[Stage], stream=None, quiet: bool = False, history: History | None = None,
                 device: str = "cpu", prior=prior_seconds):
        self.stream, self.total, self.done, self.quiet = stream or sys.stderr, len(stages), 0, quiet
        self.remaining = list(stages)
        self.history, self.device, self.prior = history or History(), device, prior
        self.start = time.time()

    def estimate(self, stage: Stage) -> float:
        """From the store's records and this run's (per unit of size, same sort of stage, same device);
        the prior (the cost model on this machine) where there is none."""
        return expected_seconds(stage, self.history, self.device, self.prior)

    def eta(self) -> str:
        seconds = sum(self.estimate(s) for s in self.remaining)
        return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"

    def begin(self, stage: Stage) -> None:
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {stage.kind:8s} {stage.label}  (elapsed {time.time() - self.start:.0f}s, "
                 f"ETA {self.eta()})")

    def end(self, stage: Stage, seconds: float, note: str = "") -> None:
        if not note:  # a stage another process built says nothing about this kind's cost
            self.history.add(stage, self.device, seconds)
        self.remaining.remove(stage)
        self.say(f"      {note or f'done in {seconds:.1f}s'}")

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)


@dataclass
class Execution:
    dirs: dict[str, Path]  # key -> artifact directory, for every stage
    built: list[Stage]  # the stages this call built (the others came from the store)
    timeline: list[dict] = field(default_factory=list)  # where and when each stage ran (the Ray executor's)


def execute(stages: list[Stage], store: Store, rebuilt: frozenset[str] = frozenset()) -> Execution:
    """Run every stage not yet in the store that a result needs (engine/plan.py: stages_to_build). A stage that
    fails on a stored input found corrupt (its weights hashed again) has that input rebuilt, once."""
    from frpo_bench.models.device import compute_device
    from frpo_bench.training.distributed import launched_rank
    rank = launched_rank()[0]  # under `accelerate launch` every process trains; only rank 0 writes the store
    built_keys = store.present(stages)
    corrupt = {s.key for s in stages if f"{s.kind}/{s.key[:20]}" in store.corrupt}
    todo = stages_to_build(stages, built_keys, corrupt)
    device = compute_device() if todo else "cpu"
    progress = Progress(todo, quiet=rank > 0, history=History.of_store(store.root) if todo else None, device=device,
                        prior=CostPrior(stages, device) if todo else prior_seconds)
    for name, problem in sorted(store.corrupt.items()):
        progress.say(f"store: {name} is corrupt ({problem}): it is not used, and is built again")
    store.corrupt.clear()
    progress.say(f"{len(stages)} stages: {build_summary(stages, todo, built_keys)} (store: {store.root})")
    built = []
    batches = GenerationBatches.of(todo)
    if rank == 0:
        preload_generation_engine(todo)
    for stage in todo:
        raise_if_stopped()
        if not uses_generation_engine(stage):
            release_generation_engines()
        if stage.kind not in ("generate", "score", "checkpoint"):
            release_resident_models()  # training needs the memory
        progress.begin(stage)
        started = time.time()
        say = lambda msg: progress.say(f"      {msg}")  # noqa: E731
        try:
            # rank 0 alone locks and writes: the other ranks of a distributed stage follow it into training
            with store.lock(stage.kind, stage.key, say) if rank == 0 else nullcontext():
                if rank == 0 and store.has(stage.kind, stage.key):
                    progress.end(stage, time.time() - started, "built meanwhile by another process: reused")
                    continue
                build(stage, store, rank, say, started, batches)
        except Exception as err:
            corrupt = corrupt_inputs(stage, store) if rank == 0 else []
            if corrupt and not rebuilt & {bad.key for bad, _ in corrupt}:
                for bad, problem in corrupt:
                    progress.say(f"      {bad.kind} '{bad.label}' is corrupt ({problem}): building it again")
                    with store.lock(bad.kind, bad.key):
                        store.discard(bad.kind, bad.key, problem)
                return execute(stages, store, rebuilt | {bad.key for bad, _ in corrupt})
            raise StageError(f"{stage.kind} stage '{stage.label}' failed: {err.__class__.__name__}: {err}. "
                             f"Finished stages are kept in {store.root}; run again to resume.") from err
        built.append(stage)
        progress.end(stage, time.time() - started)
        raise_if_stopped()
        if (store.path(stage.kind, stage.key) / INCOMPLETE).is_file():
            progress.say(f"      not kept for later runs: {(store.path(stage.kind, stage.key) / INCOMPLETE).read_text()}")
    release_generation_engines()
    release_resident_models()
    return Execution({s.key: store.path(s.kind, s.key) for s in stages}, built)


def corrupt_inputs(stage: Stage, store: Store) -> list[tuple[Stage, str]]:
    """The stored stages this one reads whose files, hashed in full, no longer match their record."""
    seen, found, todo = set(), [], [*stage.parents, *stage.uses.values()]
    while todo:
        parent = todo.pop()
        if parent.key in seen:
            continue
        seen.add(parent.key)
        problem = store.verify(parent.kind, parent.key, deep=True) if store.has(parent.kind, parent.key) else None
        if problem:
            found.append((parent, problem))
        todo.extend(parent.parents)
    return found


def build(stage: Stage, store: Store, rank: int, say, started: float,
          batches: GenerationBatches | None = None) -> None:
    from frpo_bench.models.device import compute_device, peak_memory_bytes, reset_peak_memory
    spec = {"label": stage.label, "fields": stage.fields, "parents": [p.key for p in stage.parents]}
    with store.building(stage.kind, stage.key, spec) if rank == 0 else scratch_dir() as out:
        peak_scope = reset_peak_memory()
        context = StageContext(lambda s: store.path(s.kind, s.key), say, batches or GenerationBatches())
        BY_NAME[stage.kind].run(stage, out, context)
        # stage.json is written as the block closes: what ran where, for how long, at what memory peak
        spec.update(started=started, seconds=time.time() - started, device=compute_device(), dtype=stage_dtype(stage),
                    peak_memory_bytes=peak_memory_bytes(), peak_memory_scope=peak_scope, size=stage_size(stage))


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """Where a non-main process of a distributed stage writes (and forgets) what rank 0 stores."""
    with tempfile.TemporaryDirectory(prefix="frpo-bench-rank-") as tmp:
        yield Path(tmp)


def uses_generation_engine(stage: Stage) -> bool:
    """Generation, and scoring run on the resident engine (an evaluation's `options.backend: vllm`)."""
    if stage.kind == "score":
        return stage.payload["evaluation"].options.uses_generation_engine()
    return stage.kind == "generate"


def preload_generation_engine(todo: list[Stage]) -> None:
    """When the run will generate on a vLLM engine, its process is spawned now and imports vLLM while the stages
    before its first generation run (a base model's conversion, training)."""
    for stage in todo:
        cfg = stage.payload.get("generation") if stage.kind == "generate" else stage.payload.get("engine")
        if uses_generation_engine(stage) and cfg is not None and cfg.backend == "vllm":
            from frpo_bench.models import generate_vllm
            generate_vllm.preload(cfg)
            return


def release_generation_engines(idle_on_cpu: bool = True) -> None:
    """A vLLM engine lives across generation stages; before training or scoring it stops where it holds memory
    they need (an accelerator's), and waits idle on a CPU unless told not to (models/generate_vllm.make_room)."""
    module = sys.modules.get("frpo_bench.models.generate_vllm")
    if module is not None and idle_on_cpu:
        module.make_room()
    elif module is not None:
        module.release()


def release_resident_models() -> None:
    """Inference models kept loaded across generation and scoring stages (models.resident)."""
    module = sys.modules.get("frpo_bench.models.resident")
    if module is not None:
        module.release()


def seconds_by_kind(stages: list[Stage], store: Store, by_device: bool = False) -> dict[str, float]:
    """Compute time each stage kind took when it was built (cached stages keep their original time);
    with `by_device`, keyed 'kind@device' (records from before devices were recorded: '@unrecorded')."""
    totals: dict[str, float] = {}
    for stage in stages:
        record = store.path(stage.kind, stage.key) / "stage.json"
        if not record.is_file():  # deleted after its results were scored (not needed again)
            continue
        info = json.loads(record.read_text())
        name = f"{stage.kind}@{info.get('device', 'unrecorded')}" if by_device else stage.kind
        totals[name] = totals.get(name, 0.0) + info.get("seconds", 0.0)
    return {name: round(seconds, 1) for name, seconds in totals.items()}
