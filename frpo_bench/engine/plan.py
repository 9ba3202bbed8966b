"""Expand a recipe into cells and content-addressed stages (no compute, no torch).

Stage kinds, in dependency order: base -> align -> harden -> attack -> checkpoint -> generate -> score
(a checkpoint is an attack's model at an intermediate step, for trajectories).
A stage's key covers exactly the fields that change its output plus its parents' keys;
transport-only fields (generation and evaluation batch sizes, micro-batches, devices) never
enter a key, and labels (attack and defense names) do not either.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from frpo_bench import registry
from frpo_bench.attacks.base import prompt_set_generation
from frpo_bench.config import Recipe
from frpo_bench.engine.stages import NAMES, Stage
from frpo_bench.engine.store import stage_key
from frpo_bench.errors import ConfigError

NO_ATTACK = "none"


@dataclass
class Cell:
    """One leaderboard row group: a model variant evaluated by every evaluation."""

    base: str  # raw | aligned | - (no alignment configured)
    defense: str
    attack: str
    lr: Optional[float]
    seed: Optional[int]
    model: Stage
    scores: dict[str, Stage] = field(default_factory=dict)  # metric name -> score stage
    start: Optional[Stage] = None  # the model the attack started from (the defended model); None: this one
    step: Optional[int] = None  # an intermediate point of the attack (a trajectory), else None: the final model
    steps: Optional[int] = None  # the attack's optimizer steps (the step of its final model)
    evaluations: Optional[list] = None  # what scores this cell when not the recipe's rule (a search's trials)
    generation: Optional[Any] = None  # how its completions are generated when not as the recipe says (the attack's)
    prompt_generation: Optional[Any] = None  # the attack's rule per prompt set: (settings, prompts) -> settings | None


def data_fields(refs) -> list[dict]:
    from frpo_bench.data import content_of
    # skip, head and draw_seed enter the key only when set, so keys of refs without them stay as they were
    return [{"dataset": r.dataset, "split": r.split, "n": r.n, "content": content_of(r),
             **({"skip": r.skip} if r.skip else {}), **({"head": r.head} if r.head is not None else {}),
             **({"draw_seed": r.draw_seed} if r.draw_seed is not None else {})} for r in refs]


def with_data(fields: dict, options) -> dict:
    """A component's key fields plus the identity of the data it reads (none: no `data` entry, as before)."""
    refs = options.data_refs()
    return {**fields, "data": data_fields(refs)} if refs else fields


class Planner:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.stages: dict[str, Stage] = {}

    def stage(self, kind: str, label: str, fields: dict, parents: list[Stage], uses: dict[str, Stage] | None = None,
              **payload: Any) -> Stage:
        key = stage_key(kind, fields, [p.key for p in parents])
        if kind in ("align", "harden", "attack"):  # trainers report to the recipe's trackers (never in the key)
            payload["report_to"] = self.recipe.report_to
        if key not in self.stages:
            self.stages[key] = Stage(kind, key, label, fields, parents, payload, uses or {})
        return self.stages[key]

    def model_stages(self) -> tuple[Stage, Optional[Stage]]:
        from frpo_bench.models.loading import source_fields
        r = self.recipe
        base = self.stage("base", r.model.id, source_fields(r.model), [], model=r.model)
        if r.align is None:
            return base, None
        fields = {**r.align.key_fields(), "data": data_fields(r.align.data), "lr": r.align.lr, "seed": r.align.seed}
        return base, self.stage("align", "safety SFT", fields, [base], cfg=r.align)

    def harden(self, start: Stage, defense, seed: int) -> Stage:
        if registry.load("defense", defense.type).identity:
            return start
        fields = with_data({"type": defense.type, "options": defense.options.key_fields(), "seed": seed},
                           defense.options)
        return self.stage("harden", f"{defense.name} seed={seed}", fields, [start], defense=defense, seed=seed)

    def attack(self, defended: Stage, defense_name: str, attack, lr: float, seed: int,
               stop_at: Optional[int] = None, warm_from: Optional[Stage] = None) -> Stage:
        """The attack's options sit flat beside its type (the key form of the days when every attack was SFT);
        the steps it keeps for a trajectory enter its key only when there are some. `stop_at`: the same run
        stopped after that step (a search's rung), which keeps no checkpoints. `warm_from`: an earlier stop of the
        same run whose trainer state, when still kept, this one resumes from (same weights, so not in the key)."""
        fields = with_data({"type": attack.type, **attack.options.key_fields(), "lr": lr, "seed": seed}, attack.options)
        if stop_at is not None:
            fields["stop_at"] = stop_at
        elif attack.checkpoint_steps():
            fields["checkpoints"] = attack.checkpoint_steps()
        setting = "" if lr is None else f" lr={lr:g}"
        label = f"{defense_name} / {attack.name}{setting} seed={seed}" + (f" until step {stop_at}" if stop_at else "")
        return self.stage("attack", label, fields, [defended], attack=attack, lr=lr, seed=seed, warm_from=warm_from)

    def repair(self, attacked: Stage, defended: Stage, base: Stage, defense) -> Stage:
        """A post-attack defense's repair of one attacked model (it reads the defended model and the model before
        alignment: the recipe's base, or the one the defense names)."""
        own_base = defense.options.base_model  # a repair's options name it (defenses/base.py)
        if own_base:
            from frpo_bench.config import ModelConfig
            from frpo_bench.models.loading import source_fields
            from frpo_bench.typed import from_dict
            config = from_dict(ModelConfig, {"id": own_base}, f"defenses ({defense.name}).options.base_model")
            base = self.stage("base", own_base, source_fields(config), [], model=config)
        elif self.recipe.align is None:
            raise ConfigError(f"defenses ({defense.name}).options.base_model", None, "is not given, and the recipe "
                              "has no `align` stage, so there is no model before alignment to measure V from",
                              "name the model before alignment, e.g. base_model: mistralai/Mistral-7B-v0.1")
        fields = with_data({"type": defense.type, "options": defense.options.key_fields()}, defense.options)
        return self.stage("repair", f"{defense.name} repairs {attacked.label}", fields, [attacked],
                          uses={"defended": defended, "base": base}, defense=defense)

    def attack_generation(self, attack):
        """The generation settings an attack's cells are evaluated with: the recipe's, as the attack changes them
        (an attack trained with a system prompt is evaluated with it); None where it changes nothing."""
        from frpo_bench.attacks.base import evaluation_generation
        gen = evaluation_generation(registry.load("attack", attack.type), attack.options, self.recipe.generation)
        return None if gen == self.recipe.generation else gen

    def checkpoints(self, cell: Cell, attack) -> list[Cell]:
        """The trajectory's intermediate points of an attack cell: one model stage per kept step."""
        return [Cell(cell.base, cell.defense, cell.attack, cell.lr, cell.seed,
                     self.stage("checkpoint", f"{cell.model.label} step={step}", {"step": step}, [cell.model]),
                     start=cell.start, step=step, steps=cell.steps, generation=cell.generation,
                     prompt_generation=cell.prompt_generation)
                for step in attack.checkpoint_steps()]

    def evaluations(self, cell: Cell) -> list:
        """A final model gets every evaluation; a trajectory point the recipe's trajectory metrics, on the
        first `trajectory.n` prompts of each set (a cell may name its own)."""
        if cell.evaluations is not None:
            return cell.evaluations
        if cell.step is None:
            return self.recipe.evaluations
        return self.point_evaluations()

    def point_evaluations(self) -> list:
        chosen = self.recipe.trajectory
        picked = [ev for ev in self.recipe.evaluations if not chosen.metrics or ev.metric in chosen.metrics]
        return [replace(ev, prompts=prefix(ev.prompts, ev.trajectory_n or chosen.n)) for ev in picked]

    def scores(self, cell: Cell, seed: int) -> None:
        gen = cell.generation or self.recipe.generation
        uses = {"model": cell.model, "start": cell.start or cell.model}
        evaluations = [redrawn(ev, cell) for ev in self.evaluations(cell)
                       if not ev.attacks or cell.attack == NO_ATTACK or cell.attack in ev.attacks]
        generated = [ev.prompts for ev in evaluations if registry.load("evaluator", ev.evaluator).needs_completions]
        for ev in evaluations:
            evaluator = registry.load("evaluator", ev.evaluator)
            options = ev.options.key_fields()
            prompts = data_fields([ev.prompts])[0]
            label = f"{cell_label(cell)} :: {ev.metric}"
            parent = cell.model
            if evaluator.needs_completions:
                covering = covering_ref(ev.prompts, generated)  # one generation serves every prefix of it
                gen_here = cell.prompt_generation(gen, covering) if cell.prompt_generation else gen
                if gen_here is None:
                    continue  # the attack leaves this set out of its cells (e.g. a prefill without its answers)
                gen_fields = with_data({"generation": gen_here.key_fields(), "prompts": data_fields([covering])[0]},
                                       gen_here)
                if gen.temperature > 0:
                    gen_fields["seed"] = seed
                drawn = "" if covering.draw_seed is None else f" draw={covering.draw_seed}"  # a redrawn sample: its own
                parent = self.stage("generate", f"{cell_label(cell)} :: {covering.dataset}{drawn}", gen_fields, [cell.model],
                                    generation=gen_here, prompts=covering, seed=seed)
            fields = {"evaluator": ev.evaluator, "version": evaluator.version, "options": options, "prompts": prompts}
            cell.scores[ev.metric] = self.stage("score", label, fields, [parent], uses=uses, evaluation=ev,
                                                engine=gen)  # the resident engine's settings, for scorers run on it

    def cells(self) -> list[Cell]:
        r = self.recipe
        base, aligned = self.model_stages()
        start = aligned or base
        start_label = "aligned" if aligned else "-"
        cells = []
        if aligned:
            cells.append(Cell("raw", "none", NO_ATTACK, None, None, base))
        for defense in r.defenses:
            repairs = registry.defense_repairs(defense.type)
            for seed in defense.seeds or r.seeds:
                defended = self.harden(start, defense, seed)
                cells.append(Cell(start_label, defense.name, NO_ATTACK, None, seed, defended))
                for attack in r.attacks:
                    decode_time = not registry.attack_changes_weights(attack.type)
                    for lr in attack.sweep():
                        model = defended if decode_time else self.attack(defended, defense.name, attack, lr, seed)
                        if repairs and not decode_time:
                            model = self.repair(model, defended, base, defense)
                        cells.append(Cell(start_label, defense.name, attack.name, lr, seed, model, start=defended,
                                          steps=attack.options.planned_steps(),
                                          generation=self.attack_generation(attack),
                                          prompt_generation=prompt_set_generation(
                                              registry.load("attack", attack.type), attack.options)))
                        if not repairs:  # a repair acts on the attack's final model only
                            cells += self.checkpoints(cells[-1], attack)
        for cell in cells:
            self.scores(cell, cell.seed or 0)
        return cells


def redrawn(ev, cell: Cell):
    """An evaluation whose prompts are drawn anew at each step (`redraw`) with its draw seed plus the cell's step:
    the point's own, an attack's last for its final model, 0 unattacked."""
    if not ev.redraw:
        return ev
    step = cell.step if cell.step is not None else (cell.steps or 0) if cell.attack != NO_ATTACK else 0
    return replace(ev, prompts=replace(ev.prompts, draw_seed=ev.prompts.draw_seed + step))


def cell_label(cell: Cell) -> str:
    parts = [f"base={cell.base}", f"defense={cell.defense}", f"attack={cell.attack}"]
    if cell.lr is not None:
        parts.append(f"lr={cell.lr:g}")
    if cell.seed is not None:
        parts.append(f"seed={cell.seed}")
    if cell.step is not None:
        parts.append(f"step={cell.step}")
    return " ".join(parts)


def prefix(ref, n: Optional[int]):
    """The first n rows of a DataRef's seeded order: a subset of its full selection (a prefix when that is a
    sample itself, as the demo's and most sets are), so points along a trajectory stay comparable."""
    if n is None or (ref.n is not None and ref.n <= n):
        return ref
    return replace(ref, n=n)


def covering_ref(ref, refs: list):
    """The largest of `refs` whose selection starts with `ref`'s (same data, split and skip; a seeded sample
    of n rows is the first n of a larger one), so a score on fewer prompts reads a prefix of those
    completions instead of generating its own; `ref` itself when none is larger."""
    if ref.n is None:
        return ref
    order = (ref.dataset, ref.split, ref.skip, ref.head, ref.draw_seed)
    same = [r for r in refs if (r.dataset, r.split, r.skip, r.head, r.draw_seed) == order
            and r.n is not None and r.n > ref.n]
    return max(same, key=lambda r: r.n, default=ref)


def component_options(recipe: Recipe) -> list[tuple[str, object]]:
    """(recipe path, typed Options) of every defense, attack and evaluation."""
    return ([(f"defenses[{i}].options", d.options) for i, d in enumerate(recipe.defenses)]
            + [(f"attacks[{i}].options", a.options) for i, a in enumerate(recipe.attacks)]
            + [(f"evaluations[{i}].options", e.options) for i, e in enumerate(recipe.evaluations)])


def resolve_installed(recipe: Recipe) -> dict[str, str]:
    """`settle` the recipe in place and say on stderr what was resolved and why (a run's and `plan`'s first step)."""
    resolved = settle(recipe)
    for name, how in resolved.items():
        print(f"{name}: {how}", file=sys.stderr)
    return resolved


def settle(recipe: Recipe) -> dict[str, str]:
    """Settle what the recipe leaves to the machine (parsing never looks), so that cache keys name what
    runs: `generation.backend: auto` becomes an engine (an explicit vllm must be usable), every `dtype:
    auto` a dtype. Changes `recipe`; returns what was resolved and why, for the manifest."""
    from frpo_bench.models.generate import CPU_CHOICE, resolve_backend, vllm_status
    gen, resolved, measured, attention = recipe.generation, {}, False, recipe.generation.attention
    if gen.backend == "auto":
        gen.backend, why = resolve_backend("auto", recipe.device)
        measured = why is CPU_CHOICE  # hf for now; the run's own work decides below, at the resolved dtype
        resolved["generation.backend"] = f"auto -> {gen.backend} ({why})"
    elif gen.backend == "vllm":
        usable, why = vllm_status()
        if not usable:
            raise ConfigError("generation.backend", "vllm", why, "install it, or use 'auto' or 'hf'")
    machine_dependent = [("generation", gen), *component_options(recipe)]
    for path, options in machine_dependent + ([("align", recipe.align)] if recipe.align else []):
        resolved.update(options.resolve_installed(path, recipe.device))
    if measured:
        gen.backend, why = measured_backend(recipe)
        resolved["generation.backend"] = f"auto -> {gen.backend} ({why})"
        if gen.backend == "vllm" and attention == "auto":
            gen.attention = "sdpa"
            resolved["generation.attention"] = "auto -> sdpa (the vllm backend chooses its own kernels)"
    return resolved


def measured_backend(recipe: Recipe) -> tuple[str, str]:
    """`auto` on a CPU: the run's generate stages (planned with HF) priced with each backend at this machine's
    measured rates (models/backend_choice.py); one engine start per run."""
    from frpo_bench.engine.estimate import model_parameters, prompt_count
    from frpo_bench.models.backend_choice import choose, price, read_figures
    figures, dtype = read_figures(), recipe.generation.dtype
    if price(1.0, 1, figures.get(dtype, {})) is None:  # nothing measured to price with: no plan to build
        return choose(0.0, 1, dtype, figures)
    params = model_parameters(recipe.model.id)
    if params is None:
        return "hf", f"on a CPU, and the size of {recipe.model.id} is not known here to price the engine's start"
    planner = Planner(recipe)  # planned as settled so far (HF generation): the work each backend is priced for
    planner.cells()
    flop = sum(2 * params * prompt_count(s.fields["prompts"]) * s.fields["generation"]["max_new_tokens"]
               for s in planner.stages.values() if s.kind == "generate")
    return choose(flop, 1, dtype, figures)


def build_plan(recipe: Recipe) -> tuple[list[Cell], list[Stage]]:
    """Cells and their unique stages in an order where parents come first, planned from a settled copy of
    `recipe` (which is left as it is, and nothing is printed)."""
    recipe = copy.deepcopy(recipe)
    settle(recipe)
    planner = Planner(recipe)
    cells = planner.cells()
    by_kind = sorted(planner.stages.values(), key=lambda s: NAMES.index(s.kind))
    sequence = [stage for stage in by_kind if stage.kind not in ("generate", "score")]
    if recipe.generation.backend == "hf":
        # a cell's generations, then its scores: the weights its generation loaded serve its scoring too
        # (models.resident); the vLLM backend keeps its engine across consecutive generations instead
        sequence += [stage for cell in cells for stage in cell.scores.values()]
    else:
        # a cell's generations, then its scores run on the same engine (GSM8K through it) while the cell's weights
        # are in it: one weight swap per cell, not two (0.3-0.8 s each for SmolLM2 on a 2-core CPU)
        for cell in cells:
            scores = cell.scores.values()
            sequence += [parent for score in scores for parent in score.parents if parent.kind == "generate"]
            sequence += [score for score in scores if score.payload["evaluation"].options.uses_generation_engine()]
    ordered = with_ancestors(sequence + by_kind)
    return cells, ordered


def with_ancestors(stages: list[Stage]) -> list[Stage]:
    """`stages` and everything they descend from, each once, parents first, in the order first reached."""
    ordered, seen = [], set()

    def visit(stage: Stage) -> None:
        if stage.key in seen:
            return
        for parent in stage.parents:
            visit(parent)
        seen.add(stage.key)
        ordered.append(stage)
    for stage in stages:
        visit(stage)
    return ordered


def stages_to_build(stages: list[Stage], built: set[str], rebuild: set[str] = frozenset()) -> list[Stage]:
    """The stages a run must build, in the given (parents-first) order, `built` being the keys already
    stored: a missing stage is built only when
    a result needs it, i.e. it is a leaf of `stages` (a score, or what `--stages` asked for) or a missing
    child needs it; and every ancestor of a stage to build must be there to be read (a LoRA attack's
    generation reads its whole model lineage). So once every score is in the store, the weights that made
    them (gigabytes per full fine-tune) may be deleted and a rerun trains nothing. Keys in `rebuild` (artifacts
    found corrupt) are built again whether or not a result needs them: a corrupt artifact is not left in place."""
    children: dict[str, list[Stage]] = {s.key: [] for s in stages}
    for stage in stages:
        for parent in stage.parents:
            if parent.key in children:
                children[parent.key].append(stage)
    missing = {s.key for s in stages} - built
    needed: dict[str, bool] = {}

    def is_needed(stage: Stage) -> bool:
        if stage.key not in needed:
            below = children[stage.key]
            needed[stage.key] = stage.key in missing and (stage.key in rebuild or not below
                                                          or any(is_needed(c) for c in below))
        return needed[stage.key]
    required: set[str] = set()
    pending = [s for s in stages if is_needed(s)]
    while pending:
        stage = pending.pop()
        if stage.key not in required:
            required.add(stage.key)
            pending.extend(stage.parents)
    return [s for s in stages if s.key in required and s.key in missing]


def build_summary(stages: list[Stage], todo: list[Stage], built: set[str]) -> str:
    """"N cached, M to run", and how many missing stages no result needs."""
    cached = sum(1 for s in stages if s.key in built)
    idle = len(stages) - cached - len(todo)
    return f"{cached} cached, {len(todo)} to run" + (
        f", {idle} missing but unneeded (every result they lead to is cached)" if idle else "")
