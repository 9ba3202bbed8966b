"""An attack's settings searched by Optuna on each defended model, every trial made of ordinary stages.

A trial's setting (learning rate and any of the attack's options) becomes the attack stage the grid would
build for it (same key), scored by the grid's score stages for the objective and the capability metric. With
a pruner, the trial is first trained to each rung (the same planned run stopped after that step: same
schedule, its own key) and scored there on the trajectory's prompts; Optuna decides whether it goes on. The
next stop of the same run resumes from the last rung's trainer state (training.sft.WarmStart). A
trial whose capability falls under the loosest `retention` share x the defended model's is infeasible (Optuna's
constraint) and is never a reported worst case. The best setting within each share's bound is then re-run with
seeds the search never used and scored on the rows after the search's prompts: those re-runs are the
leaderboard's `search:<attack>` rows (`search:<attack>@<share>` for a stricter share whose best differs).

The study is replayed from the store on every run: the same seed asks the same settings, and the trials
already built come back from the store, so a killed search resumes without retraining. Its journal (Optuna's
JournalStorage) is written beside the run's outputs for Optuna's own tools.
"""
from __future__ import annotations

import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from frpo_bench.engine.plan import Cell, Planner, with_ancestors
from frpo_bench.engine.search_records import (
    Rerun,
    SearchOutcome,
    TrialRecord,
    best_feasible,
    half_width,
    metric_record,
    metric_value,
    stage_seconds,
    trained_steps,
)
from frpo_bench.engine.stages import Stage
from frpo_bench.engine.store import warm_state_dir
from frpo_bench.errors import ConfigError
from frpo_bench.search_options import LR, SearchConfig, apply_setting, best_trajectory, stalled

SEARCH_PREFIX = "search:"
RunStages = Callable[[list[Stage]], dict[str, Path]]  # build what is missing, return every stage's directory


def held_out(evaluations: list) -> list:
    """Every evaluation on the rows right after the ones it scored: prompts the search never saw."""
    return [replace(e, prompts=replace(e.prompts, skip=e.prompts.skip + e.prompts.n)) for e in evaluations]


def make_study(search: SearchConfig, name: str, storage):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if search.sampler == "tpe":  # TPE reads each trial's constraint (Trial.set_constraint: <= 0 is feasible)
        sampler = optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=search.startup_trials)
    else:
        sampler = optuna.samplers.RandomSampler(seed=search.seed)
    kind, p = search.pruner.type, search.pruner
    pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_steps, reduction_factor=p.reduction_factor)
              if kind == "successive_halving" else
              optuna.pruners.HyperbandPruner(min_resource=p.min_steps, reduction_factor=p.reduction_factor)
              if kind == "hyperband" else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                               direction=search.direction)


class Search:
    """One study: an attack's search on one defended model (defense, seed)."""

    def __init__(self, planner: Planner, attack, defended: Cell, run: RunStages, report=print):
        self.planner, self.attack, self.defended, self.run, self.report = planner, attack, defended, run, report
        self.search: SearchConfig = attack.search
        self.evaluations = {e.metric: e for e in planner.recipe.evaluations}
        self.capability = planner.recipe.leaderboard.capability_metric
        self.shares = sorted(planner.recipe.leaderboard.retention)  # the loosest first: the study's constraint
        self.label = f"{attack.name} on {defended.defense} seed={defended.seed}"
        self.dirs: dict[str, Path] = {}  # every stage the study built or found, to its directory

    def final_evaluations(self) -> list:
        return [self.evaluations[m] for m in dict.fromkeys([self.search.objective, self.capability]) if m]

    def trial_attack(self, setting: dict):
        """The attack config of one setting: its options with the setting's values, the grid's trajectory steps
        that fit (so the stage is the grid's own for the same setting), no search."""
        options = apply_setting(self.attack.options, setting, f"attacks[{self.attack.name}].search")
        steps = options.planned_steps()
        kept = [s for s in self.attack.checkpoint_steps() if steps is None or s < steps]
        lr = self.lr(setting)
        return replace(self.attack, options=options, lrs=[] if lr is None else [lr], eval_every=None, eval_steps=kept,
                       search=None)

    def lr(self, setting: dict) -> Optional[float]:
        """The setting's learning rate, or the attack's first when lr is not searched (None: it does not train)."""
        return setting[LR] if LR in setting else next(iter(self.attack.lrs), None)

    def cell(self, attack, lr: float, seed: int, stop_at: Optional[int], evaluations: list,
             label: Optional[str] = None, warm_from: Optional[Stage] = None) -> Cell:
        d = self.defended
        model = self.planner.attack(d.model, d.defense, attack, lr, seed, stop_at=stop_at, warm_from=warm_from)
        cell = Cell(d.base, d.defense, label or attack.name, lr, seed, model, start=d.model, step=stop_at,
                    steps=attack.options.planned_steps(), evaluations=evaluations,
                    generation=self.planner.attack_generation(attack))
        self.planner.scores(cell, seed)
        return cell

    def spend(self, trial: TrialRecord, cell: Cell, dirs: dict[str, Path], steps: int) -> None:
        trial.steps_trained += trained_steps(dirs[cell.model.key], steps)
        for stage in [cell.model, *cell.scores.values(), *(s.parents[0] for s in cell.scores.values())]:
            if stage.key not in trial.stage_keys:
                trial.stage_keys.append(stage.key)
                trial.seconds += stage_seconds(dirs, stage)

    def run_study(self, name: str) -> tuple[list[TrialRecord], str, str]:
        import tempfile

        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        search, seed = self.search, self.defended.seed or 0
        with tempfile.TemporaryDirectory() as scratch:
            journal = Path(scratch) / "study.journal"
            study = make_study(search, name, JournalStorage(JournalFileBackend(str(journal))))
            trials: list[TrialRecord] = []
            started, stopped = time.time(), "budget"
            while len(trials) < search.trials and not self.budget_spent(trials):
                batch = [study.ask() for _ in range(min(search.parallel, search.trials - len(trials)))]
                records = [TrialRecord(self.attack.name, self.defended.defense, seed, t.number,
                                       {n: d.suggest(t, n) for n, d in search.space.items()}) for t in batch]
                self.run_batch(study, batch, records, seed)
                trials += records
                done = time.time() - started
                eta = done / len(trials) * (search.trials - len(trials))
                self.report(f"search {self.label}: {len(trials)}/{search.trials} trials, "
                            f"{sum(t.steps_trained for t in trials)} attack steps ({done:.0f}s, ETA {eta:.0f}s at most)")
                if search.stop and stalled(best_trajectory(trials, search.direction), search.stop,
                                           self.startup(), search.direction):
                    stopped = "converged"
                    self.report(f"search {self.label}: converged after {len(trials)} trials (no gain beyond the "
                                f"tolerance in the last {search.stop.patience})")
                    break
            return trials, journal.read_text(), stopped

    def startup(self) -> int:
        """The sampler's random draws before it models the space (all of them for random search)."""
        return self.search.startup_trials if self.search.sampler == "tpe" else 0

    def budget_spent(self, trials: list[TrialRecord]) -> bool:
        cap = self.search.max_attack_steps
        return cap is not None and sum(t.steps_trained for t in trials) >= cap

    def run_batch(self, study, batch, records: list[TrialRecord], seed: int) -> None:
        """Rung by rung in lockstep, told to Optuna in trial order: the study does not depend on which trial
        of the batch finished first (nor on the executor)."""
        import optuna
        attacks = {}
        for trial, record in zip(batch, records):
            try:
                attacks[record.number] = self.trial_attack(record.setting)
            except ConfigError as err:  # a combination no single bound showed (e.g. a batch the micro-batch
                record.state, record.note = "invalid", str(err)  # does not divide): Optuna learns to avoid it
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        live = [(t, r) for t, r in zip(batch, records) if r.number in attacks]
        for r in live:
            r[1].steps_planned = attacks[r[1].number].options.planned_steps() or 0
        rung_evals = [e for e in self.planner.point_evaluations() if e.metric == self.search.objective]
        last, rungs = {}, []  # a trial's last rung: the next stop of its run resumes from that rung's state
        try:
            self.climb(study, live, attacks, rung_evals, last, rungs, seed)
        finally:
            for stage in rungs:
                if stage.key in self.dirs:  # the states are a cache: a killed study just retrains from step 0
                    shutil.rmtree(warm_state_dir(self.dirs[stage.key]), ignore_errors=True)

    def climb(self, study, live, attacks, rung_evals, last: dict, rungs: list, seed: int) -> None:
        import optuna
        depth = 0
        while live:
            at_rung = [(t, r) for t, r in live if depth < len(self.search.pruner.rungs(r.steps_planned))]
            if not at_rung:
                break
            cells = {r.number: self.cell(attacks[r.number], self.lr(r.setting), seed,
                                         self.search.pruner.rungs(r.steps_planned)[depth], rung_evals,
                                         warm_from=last.get(r.number))
                     for _, r in at_rung}
            dirs = self.run([s for c in cells.values() for s in c.scores.values()])
            self.dirs.update(dirs)
            last.update((n, c.model) for n, c in cells.items())
            rungs.extend(c.model for c in cells.values())
            for trial, record in at_rung:
                cell = cells[record.number]
                value = metric_value(dirs, cell.scores[self.search.objective], self.search.objective)
                self.spend(record, cell, dirs, cell.step)
                record.rungs.append([cell.step, value])
                trial.report(value, cell.step)
                if trial.should_prune():
                    record.state, record.pruned_at = "pruned", cell.step
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            live = [(t, r) for t, r in live if r.state == "running"]
            depth += 1
        self.finish(study, live, attacks, seed, last)

    def finish(self, study, live, attacks, seed: int, last: dict) -> None:
        cells = {r.number: self.cell(attacks[r.number], self.lr(r.setting), seed, None, self.final_evaluations(),
                                     warm_from=last.get(r.number))
                 for _, r in live}
        dirs = self.run([s for c in cells.values() for s in c.scores.values()]) if cells else {}
        for trial, record in live:
            cell = cells[record.number]
            self.spend(record, cell, dirs, record.steps_planned)
            scored = metric_record(dirs, cell.scores[self.search.objective], self.search.objective)
            record.objective, record.half_width = float(scored["value"]), half_width(scored["per_sample"])
            record.state = "complete"
            if self.capability:
                record.capability = metric_value(dirs, cell.scores[self.capability], self.capability)
                record.bound = self.shares[0] * self.defended_capability
                record.feasible = record.capability >= record.bound
                trial.set_constraint("capability", record.bound - record.capability)
            else:
                record.feasible = True
            study.tell(trial, record.objective)

    def execute(self, dirs: dict[str, Path]) -> SearchOutcome:
        d = self.defended
        self.defended_capability = (metric_value(dirs, d.scores[self.capability], self.capability)
                                    if self.capability else None)
        name = f"{self.attack.name}-{d.defense}-seed{d.seed}-study{self.search.seed}"
        trials, journal, stopped = self.run_study(name)
        best = best_feasible(trials, self.search.direction)
        reruns = self.reruns(trials) if best is not None else []
        cells = []
        for rerun in reruns:
            attack = replace(self.trial_attack(rerun.trial.setting), eval_steps=[])
            cells += [self.cell(attack, rerun.lr, s, None, held_out(self.planner.recipe.evaluations), label=rerun.label)
                      for s in self.search.reeval_seeds]
        if cells:
            self.run([s for c in cells for s in c.scores.values()])
        else:
            self.report(f"search {self.label}: no feasible trial, so no worst case to re-run")
        return SearchOutcome(self.attack.name, d.defense, d.seed or 0, self.search, trials, best,
                             self.defended_capability, cells, journal, reruns, stopped)

    def reruns(self, trials: list[TrialRecord]) -> list[Rerun]:
        """The best trial within each retention share's bound, each distinct trial once."""
        name = SEARCH_PREFIX + self.attack.name
        if not self.capability:
            best = best_feasible(trials, self.search.direction)
            return [Rerun(name, [], best, self.lr(best.setting))]
        won: dict[int, Rerun] = {}
        for share in self.shares:
            bound = share * self.defended_capability
            best = best_feasible([t for t in trials if t.capability is not None and t.capability >= bound],
                                 self.search.direction)
            if best is None:
                continue
            if best.number not in won:
                label = name if share == self.shares[0] else f"{name}@{share:g}"
                won[best.number] = Rerun(label, [], best, self.lr(best.setting))
            won[best.number].shares.append(share)
        return list(won.values())


def defended_cells(cells: list[Cell]) -> list[Cell]:
    """The unattacked defended models a search starts from (not the raw base beside an aligned one)."""
    return [c for c in cells if c.attack == "none" and c.step is None and c.base != "raw"]


def run_searches(planner: Planner, cells: list[Cell], dirs: dict[str, Path], run: RunStages,
                 report=print) -> list[SearchOutcome]:
    from frpo_bench import registry
    types = {d.name: d.type for d in planner.recipe.defenses}
    outcomes = []
    for attack in planner.recipe.attacks:
        if attack.search is None:
            continue
        for defended in defended_cells(cells):
            if registry.defense_repairs(types.get(defended.defense, "none")):
                report(f"search {attack.name}: {defended.defense} is not searched (a post-attack repair: its trials "
                       "would score the unrepaired model)")
                continue
            outcomes.append(Search(planner, attack, defended, run, report).execute(dirs))
    return outcomes


def run_searches_into(recipe, cells: list, stages: list, dirs: dict, run) -> tuple[list, list, list]:
    """Run every attack's search (engine/search.py) after the grid; returns the cells with the searches'
    re-runs added, every stage used, and the searches' outcomes. `dirs` gains every stage's directory."""
    used = {s.key: s for s in stages}

    def build(chosen: list) -> dict:
        needed = with_ancestors(chosen)
        dirs.update(run(needed).dirs)
        used.update((s.key, s) for s in needed)
        return dirs
    outcomes = run_searches(Planner(recipe), cells, dirs, build,
                            report=lambda message: print(message, file=sys.stderr, flush=True))
    return cells + [c for o in outcomes for c in o.cells], list(used.values()), outcomes


def search_plan_lines(recipe, cells: list) -> list[str]:
    """What each search will spend: its stages are decided by the study as it runs, so they are not listed."""
    defended = defended_cells(cells)
    lines = []
    for i, attack in enumerate(recipe.attacks):
        s = attack.search
        if s is None:
            continue
        cap = f", at most {s.max_attack_steps} attack steps" if s.max_attack_steps else ""
        lines.append(f"search attacks[{i}] {attack.name}: {s.trials} trials{cap} on each of {len(defended)} defended "
                     f"models ({s.sampler}, pruner {s.pruner.type}, objective {s.direction} {s.objective}), then the "
                     f"best feasible setting re-run with seeds {s.reeval_seeds} on held-out prompts; its stages are "
                     "decided as the study runs")
    return [""] + lines if lines else []
