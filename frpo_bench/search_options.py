"""The typed `attacks[i].search` block: a space over the attack's own options, a budget, Optuna's sampler and
pruner, the objective and the re-evaluation of the best setting. Checked at parse time: every bound and choice
of every dimension is applied to the attack's options and validated by them, so a bad value is an exit-2
error naming the dimension before any compute."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Optional

from frpo_bench.errors import ConfigError
from frpo_bench.typed import check_positive, from_dict, opt, to_dict

LR = "lr"  # the one dimension that is not an option: the attack's learning rate
SAMPLERS = ("tpe", "random")
PRUNERS = ("successive_halving", "hyperband", "none")
DIRECTIONS = ("minimize", "maximize")
MAX_CHECKED_VALUES = 256  # an integer range at most this wide has every value validated, a wider one its ends


@dataclass
class Dimension:
    low: Optional[float] = opt(None, help="lower bound (numbers); with `high`")
    high: Optional[float] = opt(None, help="upper bound (numbers), inclusive")
    log: bool = opt(False, help="sample on a log scale (learning rates)")
    step: Optional[int] = opt(None, help="integer dimensions: the spacing of values (default 1)")
    integer: bool = opt(False, help="an integer dimension (steps, rank, batch size); bounds must be integers")
    choices: list[Any] = opt([], help="or: the values to choose from (any YAML value: numbers, strings, null, "
                                      "a mapping such as a LoRA block or a data list)")

    def validate(self, path: str) -> None:
        if self.choices:
            if self.low is not None or self.high is not None:
                raise ConfigError(path, "choices + low/high", "gives both a range and choices", "keep one of the two")
            return
        if self.low is None or self.high is None:
            raise ConfigError(path, to_dict(self), "has neither choices nor both low and high",
                              "give low and high (e.g. {low: 1.0e-5, high: 1.0e-3, log: true}) or choices: [...]")
        if not self.low < self.high:
            raise ConfigError(f"{path}.high", self.high, f"is not above low ({self.low})", "give low < high")
        if self.log and self.low <= 0:
            raise ConfigError(f"{path}.low", self.low, "must be positive on a log scale", "raise it, or drop log")
        if self.integer and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ConfigError(path, [self.low, self.high], "are not integers for an integer dimension",
                              "give whole numbers, or drop integer")
        if self.step is not None and (not self.integer or self.step < 1):
            raise ConfigError(f"{path}.step", self.step, "applies to integer dimensions only, and must be >= 1",
                              "set integer: true, or drop step")

    def values_to_check(self) -> list[Any]:
        """The values parse-time validation applies: every choice, every value of a short integer range,
        else the two ends."""
        if self.choices:
            return list(self.choices)
        if self.integer:
            values = range(int(self.low), int(self.high) + 1, self.step or 1)
            return list(values) if len(values) <= MAX_CHECKED_VALUES else [int(self.low), int(self.high)]
        return [self.low, self.high]

    def suggest(self, trial, name: str) -> Any:
        """This dimension's value for an Optuna trial (choices travel as their JSON text: Optuna keeps only
        plain values, and the text names the choice in the trial table)."""
        if self.choices:
            labels = [json.dumps(c, sort_keys=True) for c in self.choices]
            return json.loads(trial.suggest_categorical(name, labels))
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)


@dataclass
class PrunerConfig:
    type: str = opt("successive_halving", help=f"one of {', '.join(PRUNERS)} (Optuna's); the rungs are points of "
                                                "the attack where the objective is scored on the trajectory's prompts")
    min_steps: int = opt(5, help="the first rung: optimizer steps before a trial can be stopped")
    reduction_factor: int = opt(3, help="rung i is at min_steps x reduction_factor^i; about 1 trial in "
                                        "reduction_factor goes on past each rung")

    def validate(self, path: str) -> None:
        if self.type not in PRUNERS:
            raise ConfigError(f"{path}.type", self.type, "is not a pruner", f"use one of {', '.join(PRUNERS)}")
        check_positive(self, path, "min_steps")
        if self.reduction_factor < 2:
            raise ConfigError(f"{path}.reduction_factor", self.reduction_factor, "must be at least 2", "use e.g. 3")

    def rungs(self, total_steps: int) -> list[int]:
        """The steps a trial of `total_steps` is scored at before its end (empty with no pruner)."""
        if self.type == "none":
            return []
        steps, step = [], self.min_steps
        while step < total_steps:
            steps.append(step)
            step *= self.reduction_factor
        return steps


@dataclass
class StopRule:
    """When a study has converged: its best feasible objective has not improved by more than `tolerance` over
    the last `patience` finished trials, after at least `min_trials` trials past the startup draws."""

    patience: int = opt(5, help="finished trials in a row (complete, pruned or infeasible) that did not improve the "
                                "best by more than the tolerance")
    min_trials: int = opt(3, help="trials after the sampler's startup draws before the rule may stop a study (TPE "
                                  "must have acted)")
    tolerance: Optional[float] = opt(None, help="an improvement at most this large does not count; null: the 95% "
                                                "interval half-width of the best trial's objective (bootstrap over its "
                                                "prompts)")

    def validate(self, path: str) -> None:
        check_positive(self, path, "patience")
        if self.min_trials < 0:
            raise ConfigError(f"{path}.min_trials", self.min_trials, "is negative", "use 0 or more")
        if self.tolerance is not None and self.tolerance < 0:
            raise ConfigError(f"{path}.tolerance", self.tolerance, "is negative", "use 0 or more, or null")


def best_trajectory(trials, direction: str) -> list[Optional[tuple[float, float, int]]]:
    """After each trial in trial order: (best feasible objective so far, its interval half-width, the trial that
    found it), None while no trial is feasible. Ties keep the earlier trial."""
    sign = 1 if direction == "minimize" else -1
    best, out = None, []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == "complete" and t.feasible and (best is None or sign * t.objective < sign * best[0]):
            best = (t.objective, t.half_width or 0.0, t.number)
        out.append(best)
    return out


def trials_to_break(bests: list, direction: str) -> Optional[int]:
    """How many trials the search needed to come within the final best's interval half-width of it (a defense
    that slows the attacker needs more); None when no trial was feasible. `bests`: `best_trajectory`'s."""
    if not bests or bests[-1] is None:
        return None
    final, tolerance = bests[-1][0], bests[-1][1]
    for count, best in enumerate(bests, 1):
        if best is not None and (best[0] <= final + tolerance if direction == "minimize" else best[0] >= final - tolerance):
            return count
    return len(bests)


def stalled(bests: list, rule: StopRule, startup: int, direction: str) -> bool:
    """Whether a study stops under `rule` after the trials so far. `bests[i]`: (best feasible objective, its
    interval half-width, ...) after trial i (`best_trajectory`), None while nothing is feasible."""
    done = len(bests)
    if done - startup < rule.min_trials or done <= rule.patience or bests[-1] is None:
        return False
    before = bests[done - rule.patience - 1]
    if before is None:
        return False  # the first feasible trial came within the window: that is an improvement
    value, half_width = before[0], before[1]
    tolerance = half_width if rule.tolerance is None else rule.tolerance
    gain = (value - bests[-1][0]) if direction == "minimize" else (bests[-1][0] - value)
    return gain <= tolerance


@dataclass
class SearchConfig:
    """An Optuna study over the attack's settings, per defended model; every trial builds the stages the grid
    would build for that setting."""

    space: dict[str, Dimension] = opt(help="dimension name -> range or choices: `lr`, or any option of the attack, "
                                           "nested with dots (`steps`, `lora.r`, `lora`, `batch_size`, `data`, "
                                           "`lr_scheduler`, `warmup_ratio`)")
    trials: int = opt(8, help="the budget: trials per defended model (the same for every defense); with `stop`, the "
                              "most a study may take")
    stop: Optional[StopRule] = opt(None, help="stop a study once it has converged (its best flat for `patience` "
                                              "trials) instead of at `trials`; null: always `trials`")
    max_attack_steps: Optional[int] = opt(None, help="and at most this many attack optimizer steps per defended model, "
                                                     "counting every rung a trial trained (null: trials alone)")
    objective: str = opt("harmful_refusal", help="the metric the attacker drives (a metric of the recipe; with a "
                                                 "pruner also one of the trajectory's metrics)")
    direction: str = opt("minimize", help="minimize (e.g. refusal) or maximize (e.g. harmfulness) the objective")
    sampler: str = opt("tpe", help=f"Optuna sampler: {', '.join(SAMPLERS)}")
    startup_trials: int = opt(4, help="TPE's random trials before it models the space")
    seed: int = opt(0, help="the study's seed: the same seed gives the same trials")
    pruner: PrunerConfig = opt(None, help="early stopping at rungs along the attack")
    parallel: int = opt(1, help="trials asked and run together (one batch at a time; with --executor ray they run "
                                "in parallel). The study depends on it, not on the executor")
    reeval_seeds: list[int] = opt([1000, 1001], help="attack seeds of the best feasible setting's re-run (never the "
                                                     "search's: the search uses the defense's seed)")

    def __post_init__(self) -> None:
        self.pruner = self.pruner or PrunerConfig()

    def validate(self, path: str) -> None:
        if not self.space:
            raise ConfigError(f"{path}.space", self.space, "is empty", "give at least one dimension, e.g. "
                              "lr: {low: 1.0e-5, high: 1.0e-3, log: true}")
        check_positive(self, path, "trials", "parallel")
        if self.max_attack_steps is not None:
            check_positive(self, path, "max_attack_steps")
        for name, allowed in (("sampler", SAMPLERS), ("direction", DIRECTIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{path}.{name}", getattr(self, name), "is not known", f"use one of {allowed}")
        if self.startup_trials < 0:
            raise ConfigError(f"{path}.startup_trials", self.startup_trials, "is negative", "use 0 or more")
        if self.stop is not None and self.stop.patience >= self.trials:
            raise ConfigError(f"{path}.stop.patience", self.stop.patience, f"is not below trials ({self.trials}), so "
                              "the rule could never stop a study", "lower patience or raise trials")
        if not self.reeval_seeds:
            raise ConfigError(f"{path}.reeval_seeds", self.reeval_seeds, "is empty",
                              "give the seeds of the best setting's re-run, e.g. [1000, 1001]")


def check_space(search: SearchConfig, options, path: str) -> None:
    """Every value a dimension can take, applied alone to the attack's options, must pass their validation."""
    base = to_dict(options)
    for name, dim in search.space.items():
        where = f"{path}.space.{name}"
        for value in dim.values_to_check():
            if name == LR:
                if not isinstance(value, (int, float)) or value <= 0:
                    raise ConfigError(where, value, "is not a positive learning rate", "give positive bounds")
                continue
            try:
                from_dict(type(options), set_option(base, name, value, where), f"{path}[{name}={value}]")
            except ConfigError as err:
                raise ConfigError(where, value, f"is not a valid value of the attack's option ({err.problem} at "
                                  f"{err.field})", err.fix or "narrow the range") from None


def set_option(options: dict, dotted: str, value: Any, where: str) -> dict:
    """A copy of plain `options` with `dotted` (e.g. lora.r) set to `value`."""
    out = copy.deepcopy(options)
    parts, node = dotted.split("."), out
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ConfigError(where, dotted, f"reaches into '{'.'.join(parts[:i + 1])}', which is not set in the "
                              "attack's options", "set that block in options (e.g. lora: {r: 16}), or search over "
                              "the whole block")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(where, dotted, "is not an option of this attack", f"use one of {sorted([LR, *node])}")
    node[parts[-1]] = value
    return out


def apply_setting(options, setting: dict[str, Any], path: str):
    """The attack's typed options with a trial's values set (the learning rate is not an option)."""
    plain = to_dict(options)
    for name, value in setting.items():
        if name != LR:
            plain = set_option(plain, name, value, f"{path}.space.{name}")
    return from_dict(type(options), plain, path)
