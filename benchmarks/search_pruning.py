"""What the search's pruner saves: one study with successive halving and one without, the same study seed and
number of trials, on one defended model and one attack of a search recipe, each study in a store of its own.

    python benchmarks/search_pruning.py [--recipe demo_search] [--attack harmful_lora] [--defense none]
                                        [--trials 8] [--steps LOW HIGH] [--store DIR]

Each study runs in a store of its own holding only the models it attacks (base, align and harden stages copied
from --store), so neither reuses the other's trials: compute is what each study's trials trained (attack optimizer
steps, every rung counted) and the recorded build seconds of their stages. (With one shared store the second
study resumed the first's rung checkpoints and looked cheaper than it was.) The worst case
is each study's re-run of its best feasible setting (new seeds, held-out prompts) with its 95% interval.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import shutil
import tempfile
from pathlib import Path

import yaml

from frpo_bench.config import load_recipe, read_recipe_text
from frpo_bench.engine.pipeline import run_recipe
from frpo_bench.engine.store import Store
from frpo_bench.files import default_cache_dir, write_json_atomic


def study_recipe(raw: dict, attack: str, defense: str, trials: int, pruner: str, steps=None) -> dict:
    """One study of `raw`'s search of `attack` on `defense`; `steps` (low, high) widens the steps dimension."""
    recipe = copy.deepcopy(raw)
    recipe["name"] = f"{raw['name']}-{attack}-{defense}-{pruner}"
    recipe["defenses"] = [d for d in raw["defenses"] if d["name"] == defense]
    recipe["attacks"] = [a for a in raw["attacks"] if a["name"] == attack]
    if not recipe["defenses"] or not recipe["attacks"] or "search" not in recipe["attacks"][0]:
        raise SystemExit(f"{raw['name']} has no defense {defense!r} or no searched attack {attack!r}")
    search = recipe["attacks"][0]["search"]
    search["trials"] = trials
    search.setdefault("pruner", {})["type"] = pruner
    if steps:
        search["space"]["steps"] = {"low": steps[0], "high": steps[1], "integer": True}
    return recipe


def study_store(source: Path, root: Path) -> Store:
    """A store holding only the defended models of `source` (what a study attacks), none of its attacks."""
    for kind in ("base", "align", "harden", "checkpoint"):
        if (source / kind).is_dir():
            shutil.copytree(source / kind, root / kind, symlinks=True)
    return Store(root)


def study_figures(run: Path, objective: str) -> dict:
    with open(run / "search_trials.csv") as fh:
        trials = list(csv.DictReader(fh))
    with open(run / "leaderboard.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["attack"].startswith("search:") and r["metric"] == objective)
    return {"trials": len(trials), "pruned": sum(t["state"] == "pruned" for t in trials),
            "attack_steps": sum(int(t["steps_trained"]) for t in trials),
            "trial_seconds": round(sum(float(t["seconds"]) for t in trials), 1),
            "best_setting": row["notes"], "reeval_mean": float(row["mean"]),
            "reeval_ci95": [float(row["ci95_low"]), float(row["ci95_high"])], "reeval_n": int(row["n"]),
            "searched": [{k: t[k] for k in ("trial", "state", "setting", "objective", "feasible", "pruned_at",
                                            "steps_trained")} for t in trials]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="demo_search")
    parser.add_argument("--attack", default="harmful_lora")
    parser.add_argument("--defense", default="none")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="the steps dimension's bounds instead of the recipe's (longer trials: more to prune)")
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_pruning.json"))
    args = parser.parse_args()
    from frpo_bench.perf import machine_info
    raw = yaml.safe_load(read_recipe_text(args.recipe)[1])
    figures = {}
    source = args.store or default_cache_dir()
    with tempfile.TemporaryDirectory(dir=source.parent) as scratch:
        for pruner in ("successive_halving", "none"):
            path = Path(scratch) / f"{pruner}.yaml"
            study = study_recipe(raw, args.attack, args.defense, args.trials, pruner, args.steps)
            path.write_text(yaml.safe_dump(study))
            recipe, loaded = load_recipe(str(path))
            run = Path(scratch) / f"run-{pruner}"
            store = study_store(source, Path(scratch) / f"store-{pruner}")
            _, _, wall = run_recipe(recipe, loaded, store, run)
            figures[pruner] = {**study_figures(run, recipe.attacks[0].search.objective), "wall_s": round(wall, 1)}
            print(json.dumps({pruner: {k: v for k, v in figures[pruner].items() if k != "searched"}}), flush=True)
    pruned, full = figures["successive_halving"], figures["none"]
    low, high = full["reeval_ci95"]
    verdict = {"attack_steps_saving": round(full["attack_steps"] / max(pruned["attack_steps"], 1), 2),
               "trial_seconds_saving": round(full["trial_seconds"] / max(pruned["trial_seconds"], 1e-9), 2),
               "pruned_worst_case_within_unpruned_interval": low <= pruned["reeval_mean"] <= high}
    print(json.dumps(verdict))
    write_json_atomic(args.out, {"machine": machine_info(), "recipe": args.recipe, "attack": args.attack,
                                 "defense": args.defense, "trials": args.trials, "steps": args.steps,
                                 "studies": figures, "verdict": verdict})


if __name__ == "__main__":
    main()
