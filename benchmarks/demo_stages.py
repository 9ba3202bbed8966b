"""Wall time of a recipe by stage kind, once per generation backend, sharing one store.

    python benchmarks/demo_stages.py [--recipe demo] [--backends hf vllm] [--store DIR]
    python benchmarks/demo_stages.py --backends hf vllm+merged ...   # vLLM with LoRA cells merged (vllm_adapters)
    python benchmarks/demo_stages.py --backends hf vllm+merged --score-on-engine ...  # lm-eval tasks on it too

Training stages do not depend on the generation backend, so the first pass builds them and the
second reuses them; every stage's own build time is read from its stage.json, so the table shows
what each stage kind costs with each backend. Scoring by lm-eval does not use the generation
backend either and is shared too. Recorded beside them: the machine, its matmul peaks, and the first
ETA a run prints on an empty store (the cost model on those peaks), to set against the stages' total.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from frpo_bench.config import load_recipe
from frpo_bench.engine.pipeline import run_recipe
from frpo_bench.engine.plan import build_plan
from frpo_bench.engine.runner import seconds_by_kind
from frpo_bench.engine.stages import NAMES
from frpo_bench.engine.store import Store
from frpo_bench.files import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="demo")
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_stages.json"))
    parser.add_argument("--share-of", default=None, metavar="DATASET",
                        help="also report the seconds of the stages that read prompts of datasets whose name "
                             "contains this (e.g. xstest) against the rest: what those rows add to the run")
    parser.add_argument("--contended", default=None, metavar="WHY",
                        help="the machine ran other work meanwhile: the seconds are not this machine's alone (recorded "
                             "with WHY; such a run checks shares, never the first ETA)")
    parser.add_argument("--score-on-engine", action="store_true",
                        help="in the vllm passes, lm-eval's generate-until evaluations (gsm8k) run on the resident "
                             "engine too (their options.backend: vllm)")
    args = parser.parse_args()
    store = Store(args.store)
    from frpo_bench.engine.eta import CostPrior
    from frpo_bench.engine.plan import resolve_installed
    from frpo_bench.perf import machine_info
    table, floors, resolved_by, machine = {}, {}, {}, machine_info()
    for backend in args.backends:
        engine, _, adapters = backend.partition("+")  # vllm+merged: one resident engine, LoRA cells merged in
        overrides = [f"generation.backend={engine}"] + ([f"generation.vllm_adapters={adapters}"] if adapters else [])
        if engine == "vllm" and args.score_on_engine:
            overrides += [f"evaluations.{i}.options.backend=vllm"
                          for i, ev in enumerate(load_recipe(args.recipe)[0].evaluations) if ev.evaluator == "gsm8k"]
        recipe, raw = load_recipe(args.recipe, overrides)
        resolve_installed(recipe)
        resolved_by[backend] = {"dtype": recipe.generation.dtype, "attention": recipe.generation.attention,
                                "overrides": overrides}
        _, stages = build_plan(recipe)
        prior = CostPrior(stages, "cpu")
        first_eta = sum(prior(s) for s in stages)  # what the first ETA says on an empty store
        machine["peak_flops"] = {"float32": prior.machine().fp32_flops, "bfloat16": prior.machine().bf16_flops}
        _, _, wall = run_recipe(recipe, raw, store, Path("runs") / f"stages-{args.recipe}-{backend}")
        by_kind = seconds_by_kind(stages, store)
        floors[backend] = compute_floor(stages, store, machine["peak_flops"])
        table[backend] = {**by_kind, "wall_this_run": round(wall, 1), "first_eta_s": round(first_eta, 1),
                          "stages_total_s": round(sum(v for k, v in by_kind.items() if k in NAMES), 1),
                          "generate_stages": sum(s.kind == "generate" for s in stages),
                          "score_by_evaluator": score_by_evaluator(stages, store)}
        if args.share_of:
            table[backend]["share_of"] = dataset_share(stages, store, args.share_of)
        print(json.dumps({backend: table[backend]}), flush=True)
    print("\n| stage kind | " + " | ".join(args.backends) + " |\n|---|" + "---|" * len(args.backends))
    for kind in (*NAMES, "wall_this_run"):
        print(f"| {kind} | " + " | ".join(f"{table[b].get(kind, 0):.0f} s" for b in args.backends) + " |")
    print("\n| stage kind | seconds | matmul TFLOP | floor at the matmul peak | seconds / floor |\n|---|---|---|---|---|")
    for kind, row in floors[args.backends[0]].items():
        print(f"| {kind} | {row['seconds']:.0f} | {row['tflop']:.1f} | {row['floor_s']:.1f} s | "
              + (f"{row['ratio']:.1f}x |" if row["ratio"] else "- |"))
    write_json_atomic(args.out, {"machine": machine, "recipe": args.recipe, "seconds_by_kind": table,
                                 "compute_floor": floors, "resolved": resolved_by[args.backends[0]],
                                 "resolved_by_backend": resolved_by,
                                 **({"contended": True, "note": args.contended} if args.contended else {})})


def stage_seconds(stage, store: Store) -> float:
    record = store.path(stage.kind, stage.key) / "stage.json"
    return json.loads(record.read_text()).get("seconds", 0.0) if record.is_file() else 0.0


def score_by_evaluator(stages, store: Store) -> dict[str, float]:
    """Seconds of the score stages, by evaluator."""
    totals: dict[str, float] = {}
    for stage in stages:
        if stage.kind == "score":
            name = stage.fields["evaluator"]
            totals[name] = round(totals.get(name, 0.0) + stage_seconds(stage, store), 1)
    return totals


def dataset_share(stages, store: Store, name: str) -> dict:
    """Seconds of the stages whose prompts come from a dataset named like `name`, against all others'."""
    def reads(stage) -> bool:
        prompts = stage.fields.get("prompts")
        return name in json.dumps(prompts, default=str) if prompts is not None else False
    mine = sum(stage_seconds(s, store) for s in stages if reads(s))
    rest = sum(stage_seconds(s, store) for s in stages if not reads(s))
    return {"dataset": name, "stages": sum(map(reads, stages)), "seconds": round(mine, 1),
            "seconds_rest": round(rest, 1), "added_fraction": round(mine / rest, 4) if rest else None}


def compute_floor(stages, store: Store, peaks: dict) -> dict:
    """Per stage kind: the seconds it took, the matmul FLOPs it cannot avoid (engine/estimate.stage_flops) and
    those FLOPs at this machine's measured peak for their dtype: how far each kind runs from its floor."""
    from frpo_bench.engine.estimate import plan_parameters, stage_flops
    params = plan_parameters(stages)
    out: dict[str, dict] = {}
    for stage in stages:
        flops, dtype = stage_flops(stage, params)
        row = out.setdefault(stage.kind, {"seconds": 0.0, "tflop": 0.0, "floor_s": 0.0})
        row["seconds"] += stage_seconds(stage, store)
        row["tflop"] += flops / 1e12
        row["floor_s"] += flops / peaks[dtype]
    for row in out.values():
        row["ratio"] = round(row["seconds"] / row["floor_s"], 2) if row["floor_s"] else None
        row.update(seconds=round(row["seconds"], 1), tflop=round(row["tflop"], 2), floor_s=round(row["floor_s"], 1))
    return out


if __name__ == "__main__":
    main()
