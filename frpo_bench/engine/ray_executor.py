"""Run a plan's stages as Ray tasks that follow its dependency graph, every worker on one shared store.

Ray does the scheduling, placement and retries: each stage is one task whose arguments include its
parents' results, so it starts when they are done, and independent cells run at once on whatever
nodes have the resources the stage asks for (`stage_resources`). Workers read and write the same
content-addressed store (a shared filesystem path); its per-key locks and atomic renames make a
stage built once even when two workers reach it, and a worker killed mid-stage leaves nothing a
later run trusts. A failed stage is retried `retries` times (a dead worker or an exception), then
reported with its log; the stages that need it are skipped, every other cell completes.
"""
from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from frpo_bench.engine.plan import Stage, build_summary, stages_to_build
from frpo_bench.engine.runner import Execution, build, release_generation_engines, release_resident_models
from frpo_bench.engine.store import Store
from frpo_bench.errors import ConfigError, StageError

FORWARDED_ENV = ("FRPO_BENCH_DATA", "FRPO_BENCH_OFFLINE", "FRPO_BENCH_AUTO_DTYPE", "HF_HUB_OFFLINE", "HF_HOME",
                 "TOKENIZERS_PARALLELISM")  # settings, never keys: API keys must be set on the nodes themselves


@dataclass
class Outcome:
    stage: Stage
    record: dict | None = None  # where and when it ran (None: it failed or was skipped)
    error: str = ""


def local_cluster_auth() -> dict[str, str]:
    """Token authentication for a cluster this run starts itself, with a token held in this process's
    environment only. Left to itself, Ray 2.60 writes ~/.ray/auth_token, and from then on a `ray start --head`
    on this machine turns token authentication on while `ray start --address` does not: workers cannot join."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return {}  # the user chose
    import secrets
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def log_path(store: Store, stage: Stage) -> Path:
    """Every stage's own log on the shared store, kept after the run (the report of a failure points at it)."""
    return store.root / ".logs" / stage.kind / f"{stage.key[:20]}.log"


def stage_resources(stage: Stage, gpu_cluster: bool) -> dict:
    """What one stage's task asks Ray for: a CPU, and on a GPU cluster a whole GPU for every stage whose work
    loads a model (a checkpoint record, text checks and remote judges need none)."""
    from frpo_bench.engine.estimate import stage_work
    runs_model = stage.kind == "base" or stage_work(stage).runs_model
    return {"num_cpus": 1, "num_gpus": 1 if gpu_cluster and runs_model else 0}


def run_marker(store: Store, run_id: str, stage: Stage, state: str) -> Path:
    """`began` / `running` markers of this run's stages on the shared store: the driver counts them."""
    return store.root / ".runs" / run_id / f"{stage.key[:20]}.{state}"


def begin(store: Store, run_id: str, stage: Stage) -> dict:
    """Mark a stage begun and running in this run (on the shared store); where it runs, and since when."""
    import ray
    log_path(store, stage).parent.mkdir(parents=True, exist_ok=True)
    for state in ("began", "running"):
        run_marker(store, run_id, stage, state).parent.mkdir(parents=True, exist_ok=True)
        run_marker(store, run_id, stage, state).touch()
    return {"key": stage.key, "kind": stage.kind, "label": stage.label, "node": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}


def run_stage(stage: Stage, store_root: str, device: str, run_id: str, *parents_done) -> dict:
    """One stage on a Ray worker: take the key's lock, build it unless someone already has, and return
    where and when it ran. Its progress lines go to its log file on the store."""
    from frpo_bench.models.device import use_device
    use_device(device)
    store = Store(Path(store_root))
    where = begin(store, run_id, stage)
    started = where["started"]
    with open(log_path(store, stage), "a") as fh:
        def say(message: str) -> None:
            fh.write(message + "\n")
            fh.flush()
        say(f"== {stage.kind} {stage.label} on node {where['node'][:12]} pid {os.getpid()} at {time.ctime(started)}")
        try:
            with store.lock(stage.kind, stage.key, say):
                if store.has(stage.kind, stage.key):
                    say("built meanwhile by another worker: reused")
                    return {**where, "finished": time.time(), "built": False}
                build(stage, store, 0, say, started)
        except BaseException:
            say(traceback.format_exc())
            raise
        finally:
            release_generation_engines(idle_on_cpu=False)  # a long-lived worker: one idle engine each would add up
            release_resident_models()  # a worker's next task may be another process's training on this GPU
            run_marker(store, run_id, stage, "running").unlink(missing_ok=True)
        say(f"done in {time.time() - started:.1f}s")
    return {**where, "finished": time.time(), "built": True}


def launch_command(processes: int, gpu: bool, accelerate_config: str | None, port: int) -> list[str]:
    """The launcher of a defense trained on `processes` processes of one node: accelerate on GPUs (its
    config, else plain data parallel), torchrun on CPUs (accelerate starts CPU processes only via mpirun)."""
    if gpu:
        config = ["--config_file", accelerate_config] if accelerate_config else ["--multi_gpu"]
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                "--main_process_port", str(port), *config]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(port)]


def launched_stage(stage: Stage, store_root: str, run_id: str, command: list[str], recipe_file: str,
                   *parents_done) -> dict:
    """A distributed stage on a Ray worker: its processes are launched by `command` inside this task's
    placement group (rank 0 takes the key's lock and writes the store); their output goes to its log."""
    import subprocess
    store = Store(Path(store_root))
    where = begin(store, run_id, stage)
    full = [*command, "-m", "frpo_bench", "run", recipe_file, "--stages", stage.kind, "--only", stage.key,
            "--store", store_root]
    try:
        with open(log_path(store, stage), "a") as fh:
            fh.write(f"== {stage.kind} {stage.label} on node {where['node'][:12]}: {' '.join(full)}\n")
            fh.flush()
            done = subprocess.run(full, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        run_marker(store, run_id, stage, "running").unlink(missing_ok=True)
    if done.returncode != 0 or not store.has(stage.kind, stage.key):
        raise StageError(f"its {command[command.index('-m') + 1]} launch exited with {done.returncode}")
    return {**where, "finished": time.time(), "built": True}


def execute_ray(stages: list[Stage], store: Store, device: str, executor, recipe_raw: dict, report=print) -> Execution:
    """Run every stage not yet in the store on the Ray cluster at `executor.ray_address` (None: a local one)."""
    address, retries, processes = executor.ray_address, executor.retries, executor.training_processes
    auth = local_cluster_auth() if address is None else {}
    os.environ.update(auth)
    import ray
    if auth:  # Ray reads the mode when first imported, which may have been earlier in this process
        from ray._raylet import Config
        Config.initialize("")
    import yaml
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from frpo_bench.engine.stages import BY_NAME
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    try:  # address "local": a cluster of this run's own, never one that happens to run on this machine
        ray.init(address=address or "local", ignore_reinit_error=True, log_to_driver=False, runtime_env={"env_vars": env})
    except ray.exceptions.AuthenticationError:
        raise ConfigError("--ray-address", address, "refused this machine's Ray token (the cluster has token "
                          "authentication on)", "give this machine the cluster's token: RAY_AUTH_MODE=token and "
                          "RAY_AUTH_TOKEN set, or its ~/.ray/auth_token (docs/gpus.md: a Ray cluster)") from None
    gpu_cluster = ray.cluster_resources().get("GPU", 0) > 0
    remote, remote_launched = ray.remote(run_stage), ray.remote(launched_stage)
    built = store.present(stages)
    todo = stages_to_build(stages, built)
    report(f"{len(stages)} stages: {build_summary(stages, todo, built)} on the Ray cluster "
           f"({int(ray.cluster_resources().get('CPU', 0))} CPUs, {int(ray.cluster_resources().get('GPU', 0))} GPUs; "
           f"store: {store.root})")
    refs: dict[str, object] = {}
    run_id = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
    recipe_file = store.root / ".runs" / run_id / "recipe.yaml"  # for launched stages, on the shared store
    recipe_file.parent.mkdir(parents=True, exist_ok=True)
    recipe_file.write_text(yaml.safe_dump(recipe_raw, sort_keys=False))
    groups = []
    for stage in todo:  # parents first: a task's arguments include its parents' tasks, so Ray waits for them
        parents = [refs[p.key] for p in stage.parents if p.key in refs]
        settings = dict(max_retries=retries, retry_exceptions=True, name=f"{stage.kind}:{stage.label}"[:120])
        if processes > 1 and BY_NAME[stage.kind].distributed:
            bundle = {"CPU": processes, **({"GPU": processes} if gpu_cluster else {})}
            group = placement_group([bundle], strategy="STRICT_PACK")  # one bundle: N devices of one node
            groups.append(group)
            command = launch_command(processes, gpu_cluster, executor.accelerate_config,
                                     29500 + int(stage.key[:6], 16) % 1000)
            refs[stage.key] = remote_launched.options(
                num_cpus=processes, num_gpus=processes if gpu_cluster else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0),
                **settings).remote(stage, str(store.root), run_id, command, str(recipe_file), *parents)
        else:
            refs[stage.key] = remote.options(**stage_resources(stage, gpu_cluster), **settings).remote(
                stage, str(store.root), device, run_id, *parents)
    try:
        outcomes = follow(todo, refs, store, run_id, report)
    finally:
        import shutil
        for group in groups:
            remove_placement_group(group)
        shutil.rmtree(store.root / ".runs" / run_id, ignore_errors=True)
    failed = [o for o in outcomes if o.error and not o.error.startswith("skipped")]
    if failed:
        skipped = sum(1 for o in outcomes if o.error.startswith("skipped"))
        lines = [f"{o.stage.kind} stage '{o.stage.label}' failed after {retries} retries: {o.error} (log: "
                 f"{log_path(store, o.stage)})" for o in failed]
        raise StageError("; ".join(lines) + f". {skipped} stages that need it were skipped; every other stage is "
                         f"in {store.root}: run again to resume.")
    built = [o.stage for o in outcomes if o.record and o.record["built"]]
    return Execution({s.key: store.path(s.kind, s.key) for s in stages}, built,
                     [o.record for o in outcomes if o.record])


def follow(todo: list[Stage], refs: dict, store: Store, run_id: str, report) -> list[Outcome]:
    """Wait for every task, printing each as it ends with the counts done / running / waiting."""
    import ray
    by_ref = {refs[s.key]: s for s in todo}
    markers = store.root / ".runs" / run_id
    pending, outcomes, started = list(by_ref), [], time.time()
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=30)
        for ref in ready:
            stage = by_ref[ref]
            try:
                record = ray.get(ref)
                outcomes.append(Outcome(stage, record))
                note = f"on node {record['node'][:8]} in {record['finished'] - record['started']:.1f}s" + (
                    "" if record["built"] else " (built meanwhile elsewhere: reused)")
            except ray.exceptions.RayError as err:
                began = run_marker(store, run_id, stage, "began").is_file()
                outcome = Outcome(stage, error=failure(err) if began else "skipped: a stage it needs failed")
                outcomes.append(outcome)
                note = outcome.error
                if not outcome.error.startswith("skipped"):
                    note += "\n" + tail(log_path(store, stage))
            running = len(list(markers.glob("*.running"))) if markers.is_dir() else 0
            report(f"[{len(outcomes)}/{len(todo)}] {stage.kind:8s} {stage.label}: {note}  (running {running}, "
                   f"waiting {len(pending) - running}, elapsed {time.time() - started:.0f}s)")
    return outcomes


def failure(err: Exception) -> str:
    """The innermost error of a failed task, in one line."""
    import ray
    cause = err.cause if isinstance(err, ray.exceptions.RayTaskError) and err.cause else err
    text = str(cause).strip().splitlines()
    return f"{cause.__class__.__name__}: {text[-1] if text else ''}"[:300]


def tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"        | {line}" for line in text)
