"""Command line: frpo-bench run | plan | ls | leaderboard | check | verify | judges."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frpo_bench.engine.stages import NAMES as STAGE_KINDS
from frpo_bench.errors import RECEIVED_STOPS, ConfigError, StageError, Terminated, raise_if_stopped

DEFAULT_RECIPE = "demo"


def _recipe_args(p: argparse.ArgumentParser, optional: bool) -> None:
    p.add_argument("recipe", nargs="?" if optional else None, default=DEFAULT_RECIPE if optional else None,
                   help="packaged recipe name (see `frpo-bench ls`) or path to a recipe .yaml"
                        + (f" (default: {DEFAULT_RECIPE})" if optional else ""))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set seeds=[0] or --set attacks.0.lrs=[1e-4]; repeatable")
    p.add_argument("--store", type=Path, default=None,
                   help="artifact cache directory (default: $FRPO_BENCH_CACHE or ~/.cache/frpo-bench)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frpo-bench", description="Measure how well an LLM's safety survives fine-tuning.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a recipe end to end (cached stages are reused)",
                         description="Harden, attack, generate, score and write the leaderboard for a recipe.")
    _recipe_args(run, optional=True)
    run.add_argument("--out", type=Path, default=None, help="run directory for leaderboard and manifest (default: runs/<recipe>)")
    run.add_argument("--dry-run", action="store_true", help="validate and show the plan; execute nothing")
    run.add_argument("--stages", default=None, metavar="KIND[,KIND]",
                     help=f"build only these stage kinds ({', '.join(STAGE_KINDS)}) and what they need, no "
                          "leaderboard; e.g. `accelerate launch -m frpo_bench run paper --stages harden`")
    run.add_argument("--executor", default="local", choices=("local", "ray"),
                     help="local: stages one after another here; ray: stages as Ray tasks following the plan's "
                          "dependencies, on the cluster at --ray-address (the store must be a shared path: "
                          "--store or $FRPO_BENCH_CACHE); needs `pip install -e .[ray]`")
    run.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="Ray cluster to run on, e.g. 10.0.0.1:6379 or auto (default: start a local one)")
    run.add_argument("--retries", type=int, default=2, metavar="N",
                     help="with --executor ray: how many times a failed stage is retried (a dead worker or an error)")
    run.add_argument("--training-processes", type=int, default=1, metavar="N",
                     help="with --executor ray: train each defense on N processes of one node (a placement group of "
                          "N GPUs, or N CPUs on a CPU cluster), launched by accelerate (torchrun on CPUs)")
    run.add_argument("--accelerate-config", default=None, metavar="FILE",
                     help="with --training-processes on GPUs: accelerate config for the launch (e.g. "
                          "configs/accelerate/fsdp_8gpu.yaml for TAR)")
    run.add_argument("--only", default=None, metavar="KEY", help=argparse.SUPPRESS)  # one stage, for Ray's launches
    from frpo_bench.engine import estimate
    plan = sub.add_parser("plan", help="show what is cached and what would run; executes nothing",
                          description="Validate a recipe and list its stages with their cache status. With "
                                      "--estimate, the expected hours, GPU-hours and peak memory per stage kind. "
                                      + estimate.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _recipe_args(plan, optional=False)
    plan.add_argument("--estimate", action="store_true", help="print the cost model's estimate of the whole plan")
    plan.add_argument("--gpu", default="h100", choices=sorted(estimate.MACHINES),
                      help="the device the estimate is for (cpu: this machine, its matmul peaks measured now)")
    ls = sub.add_parser("ls", help="list registered defenses, attacks, evaluators, datasets and recipes",
                        description="List every registered component.")
    ls.add_argument("--options", action="store_true", help="also print every recipe field and component option with its help")
    board = sub.add_parser("leaderboard", help="rebuild and print the leaderboard of a run directory",
                           description="Re-aggregate RUN_DIR/results.jsonl into leaderboard.csv and print it.")
    board.add_argument("run_dir", type=Path, help="a run directory written by `frpo-bench run`")
    check = sub.add_parser("check", help="regression gate: compare a leaderboard (or a new checkpoint) with a baseline",
                           description="Exit 1 with a diff table when any metric moved the wrong way by more than "
                                       "its tolerance and a one-sided test at --alpha says it is not sampling noise "
                                       "(per prompt, paired, where the runs' results.jsonl lie beside their CSVs); "
                                       "0 otherwise; 2 for unusable input (a missing cell or metric, different "
                                       "judges or data).")
    check.add_argument("--baseline", type=Path, required=True,
                       help="reference leaderboard.csv (with its run's results.jsonl beside it, or NAME.results.jsonl "
                            "beside NAME.csv, the gate tests per prompt)")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument("--current", type=Path, help="leaderboard.csv to gate")
    source.add_argument("--checkpoint", help="model to evaluate first (local dir, LoRA adapter dir or Hub id)")
    check.add_argument("--recipe", default="gate", help="recipe run on --checkpoint (default: the quick packaged 'gate')")
    check.add_argument("--tolerance", action="append", default=[], metavar="METRIC=DELTA",
                       help="the smallest move in the wrong direction that matters for METRIC (default 0); repeatable")
    check.add_argument("--alpha", type=float, default=0.05,
                       help="level of the one-sided test a move must pass to fail the gate: a rerun of the same "
                            "model fails a metric at most this often")
    check.add_argument("--family", choices=["none", "holm"], default="none",
                       help="holm: control the chance of any false alarm over all metrics at --alpha (Holm's "
                            "step-down); none: each metric tested at --alpha on its own (the default)")
    check.add_argument("--allow-new-metrics", action="store_true",
                       help="let the current leaderboard have metrics the baseline lacks (they are not gated); "
                            "without it they are an error")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="recipe overrides for --checkpoint runs")
    check.add_argument("--store", type=Path, default=None, help="artifact cache directory")
    check.add_argument("--out", type=Path, default=None, help="run directory for --checkpoint (default: runs/check-<recipe>)")
    verify = sub.add_parser("verify", help="hash every file of every stored artifact against its record",
                            description="Check a store in full: every artifact's files (model weights included) "
                                        "against the sizes and sha256 recorded when it was built. Runs check sizes "
                                        "and small files on every look; this also hashes the large ones. Exit 1 if "
                                        "anything is corrupt.")
    verify.add_argument("--store", type=Path, default=None, help="artifact cache directory")
    verify.add_argument("--repair", action="store_true", help="remove corrupt artifacts, so the next run builds them again")
    verify.add_argument("--upgrade", action="store_true",
                        help="give artifacts whose marker holds no record hash (stores from before file lists) the "
                             "current marker, trusting their files as they are now; then verify")
    from frpo_bench import cli_judges
    cli_judges.add_parser(sub)
    return parser


def cmd_verify(args) -> int:
    from frpo_bench.engine.store import Store
    store = Store(args.store)
    if not store.root.is_dir():
        raise ConfigError("--store", str(store.root), "is not a directory", "give the store a run used (--store or "
                          "$FRPO_BENCH_CACHE)")
    if args.upgrade:
        from frpo_bench.engine.store import upgrade_markers
        print(f"{upgrade_markers(store)} artifacts upgraded to the current marker")
    bad = store.verify_all(repair=args.repair)
    print(f"{len(store.artifacts()) + (len(bad) if args.repair else 0)} artifacts checked in {store.root}: "
          + (f"{len(bad)} corrupt" + (" (removed: the next run builds them again)" if args.repair else
                                     " (run with --repair to remove them)") if bad else "all intact"))
    return 1 if bad else 0


def cmd_run(args) -> int:
    from frpo_bench.config import load_recipe
    from frpo_bench.engine.pipeline import plan_report, preflight, run_recipe
    from frpo_bench.engine.store import Store
    check_run_flags(args)
    recipe, raw = load_recipe(args.recipe, args.overrides)
    store = Store(args.store)
    if args.dry_run:
        preflight(recipe)
        print(plan_report(recipe, store))
        return 0
    if args.stages:
        from frpo_bench.engine.pipeline import run_stages
        from frpo_bench.training.distributed import launched_rank
        built = run_stages(recipe, store, [k.strip() for k in args.stages.split(",") if k.strip()], args.only)
        if launched_rank()[0] == 0:
            print(f"{len(built)} stages in the store ({store.root}); `frpo-bench run {args.recipe}` writes the leaderboard")
        return 0
    out = args.out or Path("runs") / recipe.name
    from frpo_bench.results import leaderboard
    if args.executor == "ray":
        check_ray(args.retries, args.training_processes)
    from frpo_bench.engine.pipeline import Executor
    executor = Executor(args.executor, args.ray_address, args.retries, args.training_processes,
                        str(Path(args.accelerate_config).resolve()) if args.accelerate_config else None)
    csv_path, rows, seconds = run_recipe(recipe, raw, store, out, executor)
    print(leaderboard.table(rows))
    import json
    manifest = json.loads((out / "manifest.json").read_text())
    built, by_kind = manifest["stages_built"], manifest["build_seconds_by_stage_kind"]
    print(f"\nfinished in {seconds:.0f}s, {built} of {len(manifest['stages'])} stages built"
          + (" (everything from cache)" if built == 0 else "")
          + "; compute when built, by stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in by_kind.items()))
    print(f"leaderboard: {csv_path} (+ leaderboard.md, summary.csv, paired.csv, plots/)\nresults:     {out / 'results.jsonl'}\n"
          f"manifest:    {out / 'manifest.json'}")
    if (out / "trajectory.csv").is_file():
        print(f"trajectory:  {out / 'trajectory.csv'} (+ plots/trajectory_*.png)")
    files = manifest.get("outputs", {})
    for name, label in (("report", "report:     "), ("lm_eval", "lm-eval:    "), ("inspect_log", "inspect:    "),
                        ("judge_agreement", "judges:     "), ("output_checks", "outputs:    ")):
        if name in files:
            print(f"{label} {files[name]}" + {"report": " (open in a browser; self-contained)",
                                              "lm_eval": " (per model: results_<date>.json + samples_<task>_<date>.jsonl)",
                                              "inspect_log": " (inspect view --log-dir " + str(Path(files[name]).parent) + ")",
                                              "judge_agreement": " (agreement and Cohen's kappa of safety judges)",
                                              "output_checks": " (empty, repetitive, non-language completions)"}[name])
    return report_unscored(rows, manifest.get("incomplete_scores", {}))


def report_unscored(rows: list[dict], incomplete: dict[str, str]) -> int:
    """Partial scores warn; a metric with no scored sample at all is an error (exit 1): its row holds no number."""
    for label, reason in incomplete.items():
        print(f"warning: {label}: {reason}; left out of n, and scored again by the next run", file=sys.stderr)
    from frpo_bench.results.schema import diverged
    broken = sorted({(r["defense"], r["attack"], r["attack_lr"]) for r in rows if diverged(r)})
    if broken:
        print(f"warning: {len(broken)} attack cells diverged (non-finite weights or losses): "
              + ", ".join(f"{d}/{a}@{lr}" for d, a, lr in broken)
              + "; marked in the leaderboard's notes and left out of the worst cases", file=sys.stderr)
    empty = sorted({r["metric"] for r in rows if not r["n"]})
    for metric in empty:
        print(f"error: {metric}: no scored sample in {sum(1 for r in rows if r['metric'] == metric and not r['n'])} "
              "rows (see the warnings above); fix the judge and run the same command again", file=sys.stderr)
    return 1 if empty else 0


def check_run_flags(args) -> None:
    """A flag the chosen mode would ignore is an error, not silently dropped."""
    ray_only = {"--ray-address": args.ray_address is not None, "--retries": args.retries != 2,
                "--training-processes": args.training_processes != 1, "--accelerate-config": args.accelerate_config}
    given = [flag for flag, set_ in ray_only.items() if set_]
    if args.stages and (args.executor != "local" or given):
        flag = "--executor" if args.executor != "local" else given[0]
        raise ConfigError(flag, getattr(args, flag[2:].replace("-", "_")), "does not apply with --stages (which builds "
                          "here, in this process or the processes `accelerate launch` started)",
                          "drop it, or drop --stages to run the whole recipe on that executor")
    if args.executor == "local" and given:
        raise ConfigError(given[0], getattr(args, given[0][2:].replace("-", "_")), "applies only with --executor ray",
                          "add --executor ray, or drop it")


def check_ray(retries: int, training_processes: int) -> None:
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--executor", "ray", "needs Ray, which is not installed", "pip install -e '.[ray]' "
                          "(make setup installs it), or use --executor local")
    if retries < 0:
        raise ConfigError("--retries", retries, "is negative", "give 0 or more")
    if training_processes < 1:
        raise ConfigError("--training-processes", training_processes, "is not a process count", "give 1 or more")


def cmd_plan(args) -> int:
    from frpo_bench.config import load_recipe
    from frpo_bench.engine.pipeline import plan_report
    from frpo_bench.engine.store import Store
    recipe, _ = load_recipe(args.recipe, args.overrides)
    print(plan_report(recipe, Store(args.store)))
    if args.estimate:
        from frpo_bench.engine.estimate import estimate_report
        from frpo_bench.engine.plan import build_plan
        print("\n" + estimate_report(build_plan(recipe)[1], recipe.model.id, args.gpu))
    return 0


def cmd_ls(args) -> int:
    import yaml

    from frpo_bench import data, registry
    from frpo_bench.config import read_recipe_text, recipe_names
    for kind, table in (("defenses", registry.DEFENSES), ("attacks", registry.ATTACKS),
                        ("evaluators", registry.EVALUATORS), ("generation backends", registry.GENERATORS)):
        print(f"{kind}:")
        for name in sorted(table):
            print(f"  {name:22s} {registry.summary(kind.split()[-1].rstrip('s') if kind != 'generation backends' else 'generator', name)}")
    print("datasets:")
    for name in data.names():
        spec = data.get(name)
        print(f"  {name:22s} [{spec.kind}; splits {', '.join(spec.splits[:4])}{'...' if len(spec.splits) > 4 else ''}] "
              f"{spec.description}")
    print("recipes:")
    for name in recipe_names():
        description = (yaml.safe_load(read_recipe_text(name)[1]) or {}).get("description", "")
        print(f"  {name:22s} {description}")
    if args.options:
        print_options()
    return 0


def print_options() -> None:
    import dataclasses

    from frpo_bench import config, registry
    from frpo_bench.data.ref import DataRef
    from frpo_bench.training.options import LoraConfig
    from frpo_bench.typed import describe
    sections = [("recipe", config.Recipe), ("model", config.ModelConfig), ("align", config.AlignConfig),
                ("attacks[i]", config.AttackConfig), ("lora", LoraConfig), ("generation", config.GenerationConfig),
                ("trajectory", config.TrajectoryConfig), ("defenses[i]", config.DefenseConfig),
                ("evaluations[i]", config.EvaluationConfig), ("data refs", DataRef)]
    for kind, table in (("defense", registry.DEFENSES), ("attack", registry.ATTACKS), ("evaluator", registry.EVALUATORS)):
        sections += [(f"{kind} {name} options", registry.options_class(kind, name)) for name in sorted(table)
                     if dataclasses.fields(registry.options_class(kind, name))]
    for title, cls in sections:
        print(f"\n{title}:\n{describe(cls)}")


def cmd_leaderboard(args) -> int:
    import json

    from frpo_bench.results import leaderboard, outputs
    results = args.run_dir / "results.jsonl"
    if not results.is_file():
        raise ConfigError("run_dir", str(args.run_dir), "holds no results.jsonl", "give a directory written by `frpo-bench run`")
    try:  # lines split on newlines only: a JSON string may hold a raw U+2028
        records = [json.loads(line) for line in results.read_text(encoding="utf-8").split("\n") if line.strip()]
    except ValueError as err:
        raise ConfigError(str(results), "its text", f"is not JSON lines ({err.__class__.__name__}: {err})",
                          "restore the results.jsonl `frpo-bench run` wrote (or run the recipe again)") from None
    manifest = args.run_dir / "manifest.json"
    from frpo_bench.config import LeaderboardConfig
    from frpo_bench.typed import from_dict
    board = json.loads(manifest.read_text())["resolved"].get("leaderboard") or {} if manifest.is_file() else {}
    settings = from_dict(LeaderboardConfig, board, "manifest.json resolved.leaderboard")
    path, rows, points = outputs.write(args.run_dir, records, settings.capability_metric, settings.retention)
    print(leaderboard.table(rows))
    print(f"\nleaderboard: {path}" + (f"\ntrajectory:  {args.run_dir / 'trajectory.csv'}" if points else ""))
    return 0


def cmd_check(args) -> int:
    from frpo_bench.results.gate import check_files
    current = args.current
    if args.checkpoint:
        from frpo_bench.config import load_recipe
        from frpo_bench.engine.pipeline import run_recipe
        from frpo_bench.engine.store import Store
        if not args.baseline.is_file():  # fail before the run, not after it
            raise ConfigError("--baseline", str(args.baseline), "is not a file", "give a leaderboard.csv written by frpo-bench")
        recipe, raw = load_recipe(args.recipe, [*args.overrides, f"model.id={args.checkpoint}"])
        out = args.out or Path("runs") / f"check-{recipe.name}"
        current, _, _ = run_recipe(recipe, raw, Store(args.store), out)
    code, report = check_files(args.baseline, current, args.tolerance, args.allow_new_metrics, args.alpha,
                               args.family)
    print(report)
    return code


INTERRUPTED = ("interrupted: the stage in progress left nothing behind; finished stages are kept in the store, "
               "and the same command resumes")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from frpo_bench.cli_judges import cmd_judges
    handler = {"run": cmd_run, "plan": cmd_plan, "ls": cmd_ls, "leaderboard": cmd_leaderboard,
               "check": cmd_check, "verify": cmd_verify, "judges": cmd_judges}[args.command]
    previous = install_stop_handlers()
    try:
        return handler(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the shell's convention: 128 + SIGINT, one line, no traceback
        print(f"\n{INTERRUPTED}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"\nterminated (SIGTERM): {INTERRUPTED.split(': ', 1)[1]}", file=sys.stderr)
        return 143
    except OSError as err:  # a full disk, a read-only or vanished folder: the path and the fix, not a traceback
        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 1
    finally:
        restore_stop_handlers(previous)


def os_error_message(err: OSError) -> str:
    import errno
    where = f" ({err.filename})" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device{where}. Nothing half-written was kept; free space there, or give "
                "--store/--out (or $FRPO_BENCH_CACHE) on a larger disk, then run the same command again")
    if isinstance(err, ConnectionError) or not err.filename:
        return f"{err.strerror or err}. Check that what it connects to runs and is reachable, then run the same command again"
    return f"{err.strerror or err}{where}. Fix the path or its permissions and run the same command again"


def install_stop_handlers() -> dict | None:
    """SIGINT (Ctrl-C) and SIGTERM (a scheduler's or `kill`'s stop) unwind the run, and are remembered so that a
    raise some library swallows is raised again at the next stage boundary. A signal the process inherited as
    ignored stays ignored (a shell's background job ignores SIGINT; Python keeps that too). Only the main thread
    may set handlers."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None
    RECEIVED_STOPS.clear()

    def stop(signum, frame):
        RECEIVED_STOPS.append(signum)
        raise_if_stopped()
    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(sig) is not signal.SIG_IGN}


def restore_stop_handlers(previous: dict | None) -> None:
    """The stop was answered: a later run in this process (a test, a notebook) starts unstopped."""
    import signal
    RECEIVED_STOPS.clear()
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())
