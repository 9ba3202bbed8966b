"""The typed recipe. YAML and `--set` only fill values; validation names the field and the fix."""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml

from frpo_bench.data.ref import DataRef
from frpo_bench.errors import ConfigError
from frpo_bench.generation_config import GenerationConfig
from frpo_bench.search_options import SearchConfig, check_space
from frpo_bench.training.options import FinetuneConfig
from frpo_bench.typed import (
    Options,
    apply_override,
    check_positive,
    check_positive_value,
    check_recipe_size,
    check_text_size,
    from_dict,
    load_yaml,
    opt,
    yaml_problem,
)

DEFAULT_RETENTION = 0.9
MAX_CELLS = 20_000  # model variants a recipe may plan (paper: 720); more is a typo or a bomb, not a study
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_safe_name(name: str, field: str) -> None:
    """Names become file and directory names (run directories, plots): no path separators, no traversal."""
    if not SAFE_NAME.fullmatch(name):
        raise ConfigError(field, name if len(name) <= 60 else name[:57] + "...", "is not a safe file name",
                          "use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")


@dataclass
class ModelConfig:
    id: str = opt("smollm2-135m-instruct", help="embedded model name, 'tiny-llama' (test model), a Hub id, or a local directory")
    revision: Optional[str] = opt(None, help="Hub revision (commit sha or tag) to pin; ignored for local and embedded models")
    trust_remote_code: bool = opt(False, help="allow code shipped with the weights to run; off unless you trust the source")

    def validate(self, path: str) -> None:
        from frpo_bench.models import model_kind
        if model_kind(self.id) == "local" and not Path(self.id).expanduser().is_dir():
            raise ConfigError(f"{path}.id", self.id, "is not an existing model directory",
                              "give a directory with config.json and safetensors weights, a Hub id, or 'smollm2-135m-instruct'")


@dataclass
class AlignConfig(FinetuneConfig):
    lr: float = opt(2e-4, help="learning rate of the safety alignment")
    seed: int = opt(0, help="seed of the safety alignment")

    def validate(self, path: str) -> None:
        super().validate(path)
        check_positive(self, path, "lr")


@dataclass
class AttackConfig:
    name: str = opt("attack", help="label of this attack in the leaderboard, e.g. harmful_lora")
    type: str = opt("finetune", help="registered attack type (see `frpo-bench ls`)")
    lrs: Optional[list[float]] = opt(None, help="learning rates to sweep, each a separate cell (default [1e-4]); an "
                                                "attack that does not train (e.g. refusal_ablation) takes none")
    options: dict[str, Any] = opt({}, help="options of that attack type (see `frpo-bench ls --options`); the "
                                           "fine-tuning attack's: data, lora, steps, batch_size, ...")
    eval_every: Optional[int] = opt(None, omit_if_default=True, help="evaluate the attacked model every N optimizer "
                                    "steps along the attack (a trajectory; the recipe's `trajectory` says which "
                                    "metrics on how many prompts); step 0 and the final model are always points")
    eval_steps: list[int] = opt([], omit_if_default=True, help="or: the optimizer steps to evaluate at, e.g. [25, 50, 75]")
    grid: dict[str, list] = opt({}, omit_if_default=True, help="one attack per combination of these options' values, "
                                "named <name>_<value> (several options: <name>_<option><value>_...); e.g. "
                                "{tokens: [5, 10, 20]}, {poison.share: [0.1, 0.3]}; expanded when the recipe loads")
    search: Optional[SearchConfig] = opt(None, omit_if_default=True, help="an Optuna search over this attack's "
                                         "settings on every defended model (leaderboard rows `search:<name>`); "
                                         "`lrs` may then be empty (no grid cells)")

    def validate(self, path: str) -> None:
        from frpo_bench.registry import attack_trains, check_name, options_class
        check_safe_name(self.name, f"{path}.name")
        check_name("attack", self.type, f"{path}.type")
        trains = attack_trains(self.type)
        if self.grid:  # load_recipe expands grids (recipe_rewrites); a config built another way must too
            raise ConfigError(f"{path}.grid", self.grid, "was not expanded", "load the recipe with config.load_recipe")
        if not trains and self.lrs:
            raise ConfigError(f"{path}.lrs", self.lrs, f"is given, and attack type '{self.type}' does not train",
                              "remove lrs (the attack is one cell per defended model and seed)")
        self.lrs = ([1e-4] if self.lrs is None else self.lrs) if trains else []
        if trains and not self.lrs and self.search is None:
            raise ConfigError(f"{path}.lrs", self.lrs, "is empty", "list at least one learning rate (or add a search)")
        for i, lr in enumerate(self.lrs):
            check_positive_value(lr, f"{path}.lrs.{i}")
        self.options = _typed_options(options_class("attack", self.type), self.options, f"{path}.options")
        if self.eval_every is not None or self.eval_steps:
            self._check_trajectory(path, self.options.planned_steps())
        if self.search is not None:
            if self.options.planned_steps() is None and self.search.pruner.type != "none":
                raise ConfigError(f"{path}.search.pruner.type", self.search.pruner.type, f"needs optimizer steps to "
                                  f"stop at, and attack type '{self.type}' has none", "use type: none")
            check_space(self.search, self.options, f"{path}.search")
            if trains and "lr" not in self.search.space and not self.lrs:
                raise ConfigError(f"{path}.search.space", sorted(self.search.space), "has no lr, and lrs is empty",
                                  "add lr to the space, or give lrs (the search then uses the first)")

    def sweep(self) -> list[Optional[float]]:
        """The learning rates of its cells; one cell without a learning rate for an attack that does not train."""
        from frpo_bench.registry import attack_trains
        return list(self.lrs) if attack_trains(self.type) else [None]

    def _check_trajectory(self, path: str, total: Optional[int]) -> None:
        if total is None:
            raise ConfigError(f"{path}.eval_every", self.eval_every or self.eval_steps, f"asks for a trajectory, but "
                              f"attack type '{self.type}' has no optimizer steps to stop at", "remove it")
        if self.eval_every is not None and self.eval_steps:
            raise ConfigError(f"{path}.eval_steps", self.eval_steps, "is given together with eval_every",
                              "keep one of the two")
        if self.eval_every is not None and not 0 < self.eval_every:
            raise ConfigError(f"{path}.eval_every", self.eval_every, "must be a positive step count", "use e.g. 100")
        for i, step in enumerate(self.eval_steps):
            if not 0 < step < total:
                raise ConfigError(f"{path}.eval_steps.{i}", step, f"is not between 0 and the attack's {total} steps "
                                  "(step 0 and the final model are always evaluated)", f"use steps in 1..{total - 1}")

    def checkpoint_steps(self) -> list[int]:
        """The intermediate steps evaluated (without 0 and the final step, which are cells of their own)."""
        total = self.options.planned_steps()
        if self.eval_every:
            return list(range(self.eval_every, total, self.eval_every)) if total else []
        return sorted(set(self.eval_steps))


@dataclass
class DefenseConfig:
    name: str = opt(help="label in the leaderboard")
    type: str = opt("", help="registered defense type; defaults to name")
    options: dict[str, Any] = opt({}, help="options of that defense type (see `frpo-bench ls`)")
    seeds: Optional[list[int]] = opt(None, help="seeds for this defense and the attacks on it (default: the recipe's seeds)")

    def validate(self, path: str) -> None:
        from frpo_bench.registry import check_name, options_class
        check_safe_name(self.name, f"{path}.name")
        self.type = self.type or self.name
        check_name("defense", self.type, f"{path}.type")
        self.options = _typed_options(options_class("defense", self.type), self.options, f"{path}.options")


@dataclass
class EvaluationConfig:
    evaluator: str = opt(help="registered evaluator (see `frpo-bench ls`)")
    prompts: DataRef = opt(help="the prompt set it scores")
    metric: str = opt("", help="column name in the leaderboard; defaults to evaluator_dataset")
    options: dict[str, Any] = opt({}, help="options of that evaluator")
    trajectory_n: Optional[int] = opt(None, help="prompts at an attack's intermediate steps for this evaluation "
                                                 "(the first n of its selection); overrides trajectory.n")
    attacks: list[str] = opt([], omit_if_default=True, help="score only the cells of these attacks (by name) and the "
                             "unattacked models, e.g. a prefilling attack's own (request, answer) set; empty: every cell")
    redraw: bool = opt(False, omit_if_default=True, help="draw the prompts anew at every evaluated step with "
                       "prompts.draw_seed + step (the FRPO reference's HarmBench and StrongREJECT samples during "
                       "attacks): an unattacked model is step 0, an attack's final model its last step")

    def validate(self, path: str) -> None:
        from frpo_bench.registry import check_name, options_class
        check_name("evaluator", self.evaluator, f"{path}.evaluator")
        if self.redraw and self.prompts.draw_seed is None:
            raise ConfigError(f"{path}.redraw", True, "re-draws from prompts.draw_seed, which is not set",
                              "add draw_seed to the prompts (the reference: 42), or drop redraw")
        if self.trajectory_n is not None:
            check_positive(self, path, "trajectory_n")
        self.metric = self.metric or f"{self.evaluator}_{self.prompts.dataset}"
        check_safe_name(self.metric, f"{path}.metric")
        self.options = _typed_options(options_class("evaluator", self.evaluator), self.options, f"{path}.options")


@dataclass
class LeaderboardConfig:
    capability_metric: Optional[str] = opt(None, help="metric that measures capability (e.g. math_accuracy), for the "
                                                       "retention-bounded worst case and the safety-vs-capability plots")
    retention: list[float] = opt([DEFAULT_RETENTION], help="an attack counts for a bounded worst case if it keeps "
                                 "capability at or above this share of the unattacked model's; a list gives one "
                                 "bounded worst case per share (the field's 5/20/50% drops: [0.95, 0.8, 0.5]); a search "
                                 "is constrained by the loosest")

    def validate(self, path: str) -> None:
        field = f"{path}.retention" if path else "retention"
        if not self.retention:
            raise ConfigError(field, self.retention, "is empty", "give a share such as 0.9, or a list of shares")
        for share in self.retention:
            if not 0 < share <= 1:
                raise ConfigError(field, share, "must be in (0, 1]",
                                  "give the share of unattacked capability an attack must keep, e.g. 0.9")
        if len(set(self.retention)) != len(self.retention):
            raise ConfigError(field, self.retention, "repeats a share", "list each share once")


@dataclass
class TrajectoryConfig:
    metrics: list[str] = opt([], help="metrics evaluated at an attack's intermediate steps (attacks[i].eval_every / "
                                      "eval_steps); empty: every evaluation of the recipe")
    n: Optional[int] = opt(None, help="prompts per set at intermediate steps: the first n of each evaluation's own "
                                      "selection (a prefix, so points stay comparable); step 0 and the final model "
                                      "keep the evaluation's full n. null: the full n everywhere")

    def validate(self, path: str) -> None:
        if self.n is not None:
            check_positive(self, path, "n")


@dataclass
class Recipe:
    name: str = opt(help="recipe name; names the default run directory")
    description: str = opt("", help="what this recipe is for")
    model: ModelConfig = opt(None, help="the starting model")
    align: Optional[AlignConfig] = opt(None, help="safety SFT applied to the model before any defense (null: none)")
    defenses: list[DefenseConfig] = opt([{"name": "none"}], help="defenses to compare")
    attacks: list[AttackConfig] = opt([], help="attacks, each swept over its learning rates; a no-attack cell is "
                                               "always included")
    seeds: list[int] = opt([0], help="seeds; every defense and attack runs once per seed")
    generation: GenerationConfig = opt(None, help="how completions are generated")
    evaluations: list[EvaluationConfig] = opt([], help="metrics computed for every cell")
    leaderboard: LeaderboardConfig = opt(None, help="how the leaderboard summarises cells")
    trajectory: TrajectoryConfig = opt(None, help="what is evaluated along an attack (for attacks with eval_every "
                                                  "or eval_steps): metrics and prompts per intermediate point")
    device: str = opt("auto", help="where every model-running stage runs: auto (the first GPU torch sees, else the "
                                   "CPU), cpu, cuda or cuda:N (transport only: never part of a cache key)")
    report_to: list[str] = opt([], help="experiment trackers for every Trainer/TRL stage and the final leaderboard: "
                                        "wandb, tensorboard, trackio, mlflow (none by default; never part of a cache key)")

    def __post_init__(self) -> None:
        self.model = self.model or ModelConfig()
        self.generation = self.generation or GenerationConfig()
        self.leaderboard = self.leaderboard or LeaderboardConfig()
        self.trajectory = self.trajectory or TrajectoryConfig()

    def validate(self, path: str) -> None:
        check_safe_name(self.name, "name")
        self._check_grid_size()
        for field, items in (("defenses", [d.name for d in self.defenses]), ("attacks", [a.name for a in self.attacks]),
                             ("evaluations", [e.metric for e in self.evaluations])):
            dupes = sorted({x for x in items if items.count(x) > 1})
            if dupes:
                raise ConfigError(field, dupes, "has repeated names", "give every entry its own name")
        if not self.seeds:
            raise ConfigError("seeds", self.seeds, "is empty", "list at least one seed, e.g. [0]")
        from frpo_bench.models.device import check_device
        if not check_device(self.device):
            raise ConfigError("device", self.device, "is not a device", "use auto, cpu, cuda or cuda:N")
        from frpo_bench.training.tracking import check_trackers
        check_trackers(self.report_to)
        if not self.defenses:
            raise ConfigError("defenses", self.defenses, "is empty, so the grid has no cell to attack or score",
                              "list at least one defense; {name: none} is the undefended model")
        if not self.evaluations:
            raise ConfigError("evaluations", [], "is empty", "add at least one evaluation, e.g. the refusal evaluator")
        names = [a.name for a in self.attacks]
        for i, ev in enumerate(self.evaluations):
            for j, name in enumerate(ev.attacks):
                if name not in names:
                    raise ConfigError(f"evaluations[{i}].attacks.{j}", name, "is not an attack of this recipe",
                                      f"use some of {names} (a grid's attacks by their expanded names)")
        for i, name in enumerate(self.trajectory.metrics):
            if name not in [e.metric for e in self.evaluations]:
                raise ConfigError(f"trajectory.metrics.{i}", name, "is not a metric of this recipe",
                                  f"use some of {[e.metric for e in self.evaluations]}")
        self._check_searches()
        metric = self.leaderboard.capability_metric
        if metric and metric not in [e.metric for e in self.evaluations]:
            raise ConfigError("leaderboard.capability_metric", metric, "is not a metric of this recipe",
                              f"use one of {[e.metric for e in self.evaluations]}")


    def _check_grid_size(self) -> None:
        """The number of cells, counted before anything expands them."""
        variants = 1 + sum(len(a.sweep()) for a in self.attacks)
        cells = sum(len(d.seeds or self.seeds) for d in self.defenses) * variants
        if cells > MAX_CELLS:
            raise ConfigError("seeds", f"{len(self.seeds)} seeds x {len(self.defenses)} defenses x {variants} "
                              "attack variants", f"plans {cells:,} cells, over the limit of {MAX_CELLS:,}",
                              "run fewer seeds, defenses or learning rates per recipe (split the study)")

    def _check_searches(self) -> None:
        """A search's objective is a metric scored on prompts with rows held out after them (its re-run's)."""
        metrics = {e.metric: e for e in self.evaluations}
        traced = self.trajectory.metrics or list(metrics)
        for i, attack in enumerate(self.attacks):
            search = attack.search
            if search is None:
                continue
            if search.objective not in metrics:
                raise ConfigError(f"attacks[{i}].search.objective", search.objective, "is not a metric of this recipe",
                                  f"use one of {list(metrics)}")
            if search.pruner.type != "none" and search.objective not in traced:
                raise ConfigError(f"attacks[{i}].search.objective", search.objective, "is not scored along attacks "
                                  "(trajectory.metrics), so the pruner has nothing at its rungs",
                                  "add it to trajectory.metrics, or set search.pruner.type: none")
            for j, e in enumerate(self.evaluations):
                if e.prompts.n is None:
                    raise ConfigError(f"evaluations[{j}].prompts.n", None, "is unset, so no prompts are left for "
                                      f"the re-run of attacks[{i}]'s search on prompts it never saw",
                                      "give n (the re-run scores the next n rows)")
            if set(search.reeval_seeds) & set(self.seeds + [s for d in self.defenses for s in d.seeds or []]):
                raise ConfigError(f"attacks[{i}].search.reeval_seeds", search.reeval_seeds, "share a seed with the "
                                  "search's (the recipe's and the defenses' seeds)", "use other seeds, e.g. [1000, 1001]")


def _typed_options(cls: type[Options], options: Any, path: str) -> Options:
    if isinstance(options, dict) and options and not fields(cls):
        raise ConfigError(path, options, "takes no options", "remove the options")
    return from_dict(cls, options, path)


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("frpo_bench.recipes").iterdir() if p.name.endswith(".yaml"))


def read_recipe_text(name_or_path: str) -> tuple[str, str]:
    """Return (source, yaml text) for a packaged recipe name or a YAML path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError("recipe", name_or_path, "file does not exist", "give the path of a recipe YAML file")
        try:
            return str(path.resolve()), path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError("recipe", name_or_path, "is not a text file (not UTF-8)",
                              "give a recipe YAML file") from None
    if name_or_path not in recipe_names():
        raise ConfigError("recipe", name_or_path, "is not a packaged recipe or a .yaml path",
                          f"use one of {recipe_names()} or a path to a .yaml file")
    return f"packaged:{name_or_path}", resources.files("frpo_bench.recipes").joinpath(f"{name_or_path}.yaml").read_text()


def load_recipe(name_or_path: str, overrides: list[str] = ()) -> tuple[Recipe, dict]:
    """Parse, override and validate a recipe; returns the typed recipe and the raw dict."""
    source, text = read_recipe_text(name_or_path)
    check_text_size(text, "recipe")
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError("recipe", name_or_path, f"is not valid YAML ({yaml_problem(err)})",
                          "fix the YAML there (indentation, brackets, quotes)") from None
    if raw is None:
        raise ConfigError("recipe", name_or_path, "is empty", "write the recipe's fields (see `frpo-bench ls --options`)")
    if not isinstance(raw, dict):
        raise ConfigError("recipe", name_or_path, f"must be a mapping of recipe fields, not a {type(raw).__name__}",
                          "write key: value pairs at the top level (name:, model:, evaluations:, ...)")
    check_recipe_size(raw, "recipe")
    for assignment in overrides:
        apply_override(raw, assignment)
    check_recipe_size(raw, "recipe")
    for key in [k for k in raw if isinstance(k, str) and k.startswith("x-")]:
        del raw[key]  # `x-...` keys hold YAML anchors shared by several entries (as in docker-compose files)
    raw.setdefault("name", Path(name_or_path).stem)
    from frpo_bench.recipe_rewrites import expand_attack_grids, grid_origin, lift_attack_options
    lift_attack_options(raw)
    origins = expand_attack_grids(raw)
    try:
        return from_dict(Recipe, raw), {"source": source, "raw": raw}
    except ConfigError as err:
        raise grid_origin(err, origins) from None
