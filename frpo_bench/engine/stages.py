"""The stage kinds, in dependency order, in one table: what runs each, whether it trains under
`accelerate launch` on several processes, and its first-ETA prior. Plan ordering, stage selection,
progress and the benchmarks read this table; adding a stage kind is one executor and one row."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from frpo_bench import registry
from frpo_bench.data.prompts import responses_for, user_text
from frpo_bench.engine.store import INCOMPLETE, warm_state_dir
from frpo_bench.files import write_json_atomic
from frpo_bench.models.artifact import read_model, write_model
from frpo_bench.training.tracking import reporting

Report = Callable[[str], None]


@dataclass
class Stage:
    """One content-addressed unit of work: its key hashes `fields` and the parents' keys."""

    kind: str
    key: str
    label: str
    fields: dict
    parents: list["Stage"] = field(default_factory=list)  # their keys enter this stage's key
    payload: dict = field(default_factory=dict)  # typed configs the executor needs (not hashed)
    uses: dict[str, "Stage"] = field(default_factory=dict)  # other stages it reads, already among its ancestors


PathOf = Callable[[Stage], Path]  # where a (finished) stage's artifact is


def run_base(stage: Stage, out: Path, ctx: StageContext) -> None:
    from frpo_bench.models.loading import materialize
    write_model(out, materialize(stage.payload["model"], out))


def run_align(stage: Stage, out: Path, ctx: StageContext) -> None:
    path_of, report = ctx.path_of, ctx.report
    from frpo_bench.training.sft import finetune
    cfg = stage.payload["cfg"]
    start = read_model(path_of(stage.parents[0]))
    with reporting(stage.payload.get("report_to", []), out):
        write_model(out, finetune(start, out, cfg, lr=cfg.lr, seed=cfg.seed, merge=True, report=report))
    stop_if_diverged(out)


def run_harden(stage: Stage, out: Path, ctx: StageContext) -> None:
    path_of, report = ctx.path_of, ctx.report
    defense = stage.payload["defense"]
    impl = registry.load("defense", defense.type)()
    start = read_model(path_of(stage.parents[0]))
    with reporting(stage.payload.get("report_to", []), out):
        write_model(out, impl.apply(start, out, defense.options, seed=stage.payload["seed"], report=report))
    stop_if_diverged(out)


def run_attack(stage: Stage, out: Path, ctx: StageContext) -> None:
    path_of, report = ctx.path_of, ctx.report
    attack = stage.payload["attack"]
    impl = registry.load("attack", attack.type)()
    defended = read_model(path_of(stage.parents[0]))
    with reporting(stage.payload.get("report_to", []), out):
        write_model(out, impl.apply(defended, out, attack.options, lr=stage.payload["lr"], seed=stage.payload["seed"],
                                    report=report, **checkpoint_kwargs(stage, path_of)))
    from frpo_bench.training.divergence import divergence, record_divergence
    why = divergence(out)
    if why:  # the attack's cells are kept, marked, and left out of worst cases: a broken model is not an attack won
        report(f"the attack diverged: {why}; its cells are marked in the leaderboard's notes")
        record_divergence(out, why)


def stop_if_diverged(out: Path) -> None:
    """A defense or alignment whose training diverged stops the run: nothing built on it would mean anything."""
    from frpo_bench.training.divergence import Diverged, divergence
    why = divergence(out)
    if why:
        raise Diverged(f"training diverged ({why}); lower the learning rate or check the data")


def checkpoint_kwargs(stage: Stage, path_of: PathOf) -> dict:
    """Only a trajectory's attack is asked for checkpoints, and only a search's rung to stop early and keep its
    trainer state for the next rung of the same run, which resumes from it (attacks without trajectories or
    searches need not know of them)."""
    steps, stop, warm_from = stage.fields.get("checkpoints"), stage.fields.get("stop_at"), stage.payload.get("warm_from")
    kwargs = {**({"checkpoint_steps": steps} if steps else {}), **({"stop_at": stop} if stop else {})}
    if stop or warm_from:
        from frpo_bench.training.sft import WarmStart
        kwargs["warm"] = WarmStart(keep=warm_state_dir(path_of(stage)) if stop else None,
                                   resume=warm_state_dir(path_of(warm_from)) if warm_from else None)
    return kwargs


def run_repair(stage: Stage, out: Path, ctx: StageContext) -> None:
    """A post-attack defense on the attacked model (defenses/base.py, `repairs`)."""
    path_of, report = ctx.path_of, ctx.report
    defense = stage.payload["defense"]
    impl = registry.load("defense", defense.type)()
    attacked, defended, base = (read_model(path_of(s)) for s in (stage.parents[0], stage.uses["defended"],
                                                                 stage.uses["base"]))
    write_model(out, impl.repair(attacked, defended, base, out, defense.options, report=report))
    stop_if_diverged(out)


def run_checkpoint(stage: Stage, out: Path, ctx: StageContext) -> None:
    """The attacked model after `step` optimizer steps: the record its attack kept (the weights stay there)."""
    path_of = ctx.path_of
    from frpo_bench.models.artifact import checkpoint_record
    write_model(out, read_model(path_of(stage.parents[0]), checkpoint_record(stage.fields["step"])))


@dataclass
class GenerationBatches:
    """Generate stages of one model under the same settings (a cell's prompt sets) go to a resident engine as one
    request, whose prompts it batches together; each stage still writes its own artifact, under its own lock. The
    hf backend's outputs depend on which prompts are padded together: its stages run one by one. One run's
    batches: the groups of the stages it will build, and the completions made for a group's stages not yet
    written."""

    groups: dict[str, list[Stage]] = field(default_factory=dict)  # the first stage's key -> its group
    made: dict[str, tuple[list[dict], list[str], float]] = field(default_factory=dict)  # rows, completions, seconds

    @classmethod
    def of(cls, todo: list[Stage]) -> "GenerationBatches":
        groups: dict[tuple, list[Stage]] = {}
        for stage in todo:
            if stage.kind == "generate" and stage.payload["generation"].backend == "vllm":
                settings = {k: v for k, v in stage.fields.items() if k != "prompts"}
                key = (stage.parents[0].key, json.dumps(settings, sort_keys=True, default=str), stage.payload["seed"])
                groups.setdefault(key, []).append(stage)
        return cls({group[0].key: group for group in groups.values() if len(group) > 1})

    def take(self, stage: Stage, path_of: PathOf, report: Report) -> tuple[list[dict], list[str], float]:
        """A generate stage's rows, completions and share of the seconds: its group's request, made once."""
        if stage.key not in self.made:
            self.made.update(generate_together(self.groups.get(stage.key, [stage]), path_of, report))
        return self.made.pop(stage.key)


@dataclass
class StageContext:
    """What a stage's run reads besides the stage: where finished stages are, where to report, this run's
    generation batches."""

    path_of: PathOf
    report: Report
    generations: GenerationBatches = field(default_factory=GenerationBatches)


def generate_together(group: list[Stage], path_of: PathOf, report: Report) -> dict[str, tuple]:
    """The completions of every stage of `group` (one model, one generation setting) from one generator call."""
    from frpo_bench.data import ref_rows
    gen, seed = group[0].payload["generation"], group[0].payload["seed"]
    rows = [ref_rows(stage.payload["prompts"]) for stage in group]
    start = time.time()
    model = read_model(path_of(group[0].parents[0]))
    messages = [gen.user_message(user_text(r)) for part in rows for r in part]
    prefills = [p for part in rows for p in responses_for(part, gen.prefill_data)] if gen.prefill_tokens else None
    if len(group) > 1:
        report(f"generating {len(group)} prompt sets of this model together ({len(messages)} prompts)")
    completions = registry.load("generator", gen.backend)(report=report).generate(model, messages, gen, seed=seed,
                                                                                   prefills=prefills)
    seconds, at, made = time.time() - start, 0, {}
    for stage, part in zip(group, rows):
        made[stage.key] = (part, completions[at: at + len(part)], seconds * len(part) / len(messages))
        at += len(part)
    return made


def run_generate(stage: Stage, out: Path, ctx: StageContext) -> None:
    rows, completions, seconds = ctx.generations.take(stage, ctx.path_of, ctx.report)
    with open(out / "completions.jsonl", "w") as fh:
        for row, completion in zip(rows, completions):
            fh.write(json.dumps({**row, "completion": completion}) + "\n")
    system = stage.payload["generation"].system_message()  # as sent (a data set's shared message, read now)
    write_json_atomic(out / "generation.json", {"seconds": seconds, "n": len(rows), "system_prompt": system})


def run_score(stage: Stage, out: Path, ctx: StageContext) -> None:
    path_of, report = ctx.path_of, ctx.report
    from frpo_bench.data import content_of, ref_selection, spec_for
    from frpo_bench.evaluators.base import ScoreInputs
    ev = stage.payload["evaluation"]
    evaluator = registry.load("evaluator", ev.evaluator)()
    spec = spec_for(ev.prompts)
    rows, positions = ref_selection(ev.prompts)
    completions, generation = None, {}
    if evaluator.needs_completions:
        rows = generated_prefix(path_of(stage.parents[0]) / "completions.jsonl", rows)
        completions = [r.pop("completion") for r in rows]
        generation = stage.parents[0].fields["generation"]
    inputs = ScoreInputs(rows, positions, completions, read_model(path_of(stage.uses["model"])), spec.harmful,
                         spec.name, ev.prompts.split, generation, out, report,
                         start_model=read_model(path_of(stage.uses["start"])) if "start" in stage.uses else None,
                         engine=stage.payload.get("engine"))
    result = evaluator.score(inputs, ev.options)
    metrics = [{"metric": f"{ev.metric}:{m.suffix}" if m.suffix else ev.metric, "value": m.value,
                "n": len(m.per_sample), "higher_is_better": m.higher_is_better, "unit": m.unit,
                "per_sample": m.per_sample} for m in result.metrics]
    with open(out / "samples.jsonl", "w") as fh:
        for record in result.records:
            fh.write(json.dumps(record) + "\n")
    meta = {**result.meta, "evaluator": ev.evaluator, "version": evaluator.version, "dataset": spec.name,
            "split": ev.prompts.split,
            "dataset_revision": spec.revision if spec.files or "file" in spec.meta else content_of(ev.prompts),
            "dataset_source": spec.source, "attack_compute": attack_compute(stage.uses["model"], path_of)}
    write_json_atomic(out / "result.json", {"metrics": metrics, "meta": meta})
    if meta.get("incomplete"):  # the store lets this run read it, and no later run reuse it
        (out / INCOMPLETE).write_text(str(meta["incomplete"]) + "\n")


def attack_compute(model: Stage, path_of: PathOf) -> dict:
    """What the attack behind a scored model trained: optimizer steps and (non-padding) tokens, from its train log
    (0 and 0 for an attack that does not train; at a trajectory point, what it had trained by then); blank for a
    model never attacked. Kept with the score, so that it outlives the attack's deleted weights."""
    attack = model if model.kind == "attack" else next((p for p in model.parents if p.kind == "attack"), None)
    path = path_of(attack) / "train_log.json" if attack is not None else None
    if path is None or not path.is_file():
        return {"attack_steps": "", "attack_tokens": ""}
    log = json.loads(path.read_text())
    step = model.fields["step"] if model.kind == "checkpoint" else log.get("steps", 0)
    seen = [h["num_input_tokens_seen"] for h in log.get("history", [])
            if h.get("step") == step and "num_input_tokens_seen" in h]
    from frpo_bench.training.divergence import recorded_divergence
    diverged = recorded_divergence(path.parent)
    return {"attack_steps": step, "attack_tokens": seen[-1] if seen else log.get("tokens", 0),
            **({"attack_diverged": diverged} if diverged else {})}


def generated_prefix(path: Path, rows: list[dict]) -> list[dict]:
    """The first len(rows) generated rows (a generation may cover a larger selection that starts with this
    one: plan.covering_ref), checked to be these prompts."""
    generated = [json.loads(line) for line in path.read_text().splitlines()][: len(rows)]
    for i, (row, done) in enumerate(zip(rows, generated)):
        if user_text(row) != user_text(done):
            raise RuntimeError(f"{path}: row {i} was generated for another prompt than the one scored "
                               "(the generation's selection does not start with the score's)")
    if len(generated) < len(rows):
        raise RuntimeError(f"{path}: {len(generated)} completions for {len(rows)} prompts scored")
    return generated


@dataclass(frozen=True)
class StageKind:
    name: str
    run: Callable[[Stage, Path, StageContext], None]
    distributed: bool  # trains under `accelerate launch` on several processes (the others run in one process)
    prior_seconds: float  # first ETA before this run has measured one: 2-core CPU, embedded model


KINDS = (
    StageKind("base", run_base, False, 40),
    StageKind("align", run_align, False, 200),
    StageKind("harden", run_harden, True, 300),
    StageKind("attack", run_attack, False, 60),
    StageKind("checkpoint", run_checkpoint, False, 0.1),
    StageKind("repair", run_repair, False, 20),
    StageKind("generate", run_generate, False, 30),
    StageKind("score", run_score, False, 2),
)
BY_NAME = {k.name: k for k in KINDS}
NAMES = tuple(BY_NAME)
PRIOR_SELF_GENERATING_SCORE_SECONDS = 90  # a score stage that runs the model itself (lm-eval)


def stage_dtype(stage: Stage) -> str:
    """The compute dtype the stage's own settings ask for (what stage.json records beside the device)."""
    fields = stage.fields
    if stage.kind == "generate":
        return fields["generation"]["dtype"]
    options = fields.get("options") if isinstance(fields.get("options"), dict) else {}
    if stage.kind == "score":
        return options.get("dtype", "-")  # "-": scoring without a model (text checks)
    bf16 = fields.get("bf16", options.get("bf16", False))
    return "bfloat16" if bf16 else "float32"  # training: bf16 autocast over fp32 weights, or fp32


def stage_size(stage: Stage) -> dict:
    """What a stage's cost scales with, for estimates from measured history: optimizer steps and the
    sequences per step of training, prompts and new tokens of generation, prompts scored."""
    fields, options = stage.fields, stage.fields.get("options") or {}
    if stage.kind in ("align", "attack"):
        return {"steps": fields.get("steps"), "batch": fields.get("batch_size"), "max_length": fields.get("max_length")}
    if stage.kind == "harden":
        return {"steps": options.get("steps")}
    if stage.kind == "generate":
        return {"prompts": prompt_count(fields["prompts"]), "max_new_tokens": fields["generation"]["max_new_tokens"]}
    if stage.kind == "score":
        return {"prompts": prompt_count(fields["prompts"])}
    return {}


def sort_of(kind: str, fields: dict) -> tuple:
    """Stages whose cost per unit of size is comparable: the same kind and evaluator, defense type or
    LoRA-versus-full training."""
    if kind == "score":
        return kind, fields.get("evaluator")
    if kind == "harden":
        return kind, fields.get("type")
    if kind in ("align", "attack"):
        if "steps" not in fields:  # an attack that does not train: its cost is its own (and has no size)
            return kind, fields.get("type")
        return kind, "lora" if fields.get("lora") else "full"
    return (kind,)


def prompt_count(prompts: dict) -> int | None:
    """How many rows a prompt set's key fields select: n, or the split's size less skip (None where the
    data cannot be read here)."""
    if prompts.get("n"):
        return int(prompts["n"])
    from frpo_bench.data import split_size
    try:
        size = split_size(prompts["dataset"], prompts["split"])
        return min(size, prompts.get("head") or size) - prompts.get("skip", 0)
    except Exception:  # noqa: BLE001 - unreadable data only makes a size unknown
        return None


def prior_seconds(stage: Stage) -> float:
    if stage.kind == "score" and "model" in stage.uses and stage.parents == [stage.uses["model"]]:
        return PRIOR_SELF_GENERATING_SCORE_SECONDS
    return BY_NAME[stage.kind].prior_seconds
