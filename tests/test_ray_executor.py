"""The Ray executor on a local two-node cluster (two `ray start` processes, 2 and 1 CPUs): the same
leaderboard as the local executor, every stage built once, independent cells at the same time, a
killed worker's stage retried, a failing stage reported with its log while the other cells finish,
and a defense trained on two processes of one node in a placement group."""
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require

require(importlib.util.find_spec("ray") is not None, "Ray is not installed (pip install -e '.[ray]')", module=True)
pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
PORT = "6391"
ADDRESS = f"127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def ray_cluster():
    """Two nodes with token authentication on and one token for both, so a stale ~/.ray/auth_token (which makes
    `ray start --head` turn authentication on by itself) cannot split them; stopped whatever happens."""
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {name: os.environ.get(name) for name in token}
    os.environ.update(token)  # for the nodes and for every frpo-bench process the tests start
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([RAY, "stop", "-f"], env=env, capture_output=True)
    try:
        subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--port", PORT, "--include-dashboard=false",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True)
        subprocess.run([RAY, "start", "--address", ADDRESS, "--num-cpus", "1"], env=env, check=True, capture_output=True)
        yield ADDRESS
    finally:
        subprocess.run([RAY, "stop", "-f"], env=env, capture_output=True)
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def frpo(*args, store, out, wait=True, recipe="smoke"):
    command = [sys.executable, "-m", "frpo_bench", "run", recipe, "--store", str(store), "--out", str(out), *args]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def local_smoke(tmp_path_factory) -> Path:
    """smoke run locally once for the module: the leaderboard the Ray runs must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("local")
    local = frpo(store=out / "store", out=out / "run")
    assert local.returncode == 0, local.stderr[-2000:]
    return out / "run" / "leaderboard.csv"


def records(store: Path) -> list[dict]:
    return [json.loads(p.with_name("stage.json").read_text()) for p in store.rglob("COMPLETE")]


def test_smoke_on_two_ray_nodes_equals_the_local_run(ray_cluster, local_smoke, tmp_path):
    done = frpo("--executor", "ray", "--ray-address", ray_cluster, store=tmp_path / "shared", out=tmp_path / "ray-run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ray-run" / "leaderboard.csv").read_bytes() == local_smoke.read_bytes()
    built = records(tmp_path / "shared")
    assert len(built) == 24 and len({r["key"] for r in built}) == 24  # every stage built exactly once
    timeline = json.loads((tmp_path / "ray-run" / "timeline.json").read_text())
    assert len(timeline) == 24 and all(r["built"] for r in timeline)
    assert len({r["node"] for r in timeline}) == 2  # both nodes worked
    spans = [(r["started"], r["finished"], r["label"].split(" :: ")[0], r["node"]) for r in timeline]
    assert any(a[0] < b[1] and b[0] < a[1] and a[2] != b[2] and a[3] != b[3] for a in spans for b in spans)
    # a laptop afterwards, on the same store: everything cached, the same leaderboard
    again = frpo(store=tmp_path / "shared", out=tmp_path / "laptop")
    assert again.returncode == 0 and "everything from cache" in again.stdout
    assert (tmp_path / "laptop" / "leaderboard.csv").read_bytes() == local_smoke.read_bytes()


def test_a_killed_worker_is_retried_and_the_result_is_complete(ray_cluster, local_smoke, tmp_path):
    store = tmp_path / "shared"
    run = frpo("--executor", "ray", "--ray-address", ray_cluster, store=store, out=tmp_path / "ray-run", wait=False)
    killed, deadline = None, time.time() + 300
    while killed is None and time.time() < deadline and run.poll() is None:
        building = [p for kind in ("align", "attack") for p in (store / kind).glob(".*.building.*")]
        for leftover in building:
            lock = store / ".locks" / leftover.parent.name / f"{leftover.name.split('.')[1]}.lock"
            text = lock.read_text() if lock.is_file() else ""
            if text.startswith("pid "):
                killed = (int(text.split()[1]), leftover.parent.name, leftover.name.split(".")[1])
                os.kill(killed[0], signal.SIGKILL)
                break
        time.sleep(0.02)
    out, err = run.communicate(timeout=600)
    assert killed is not None, "no stage was caught mid-build"
    assert run.returncode == 0, err[-3000:]
    record = json.loads((store / killed[1] / killed[2] / "stage.json").read_text())
    assert record["built_by"]["pid"] != killed[0]  # rebuilt by the retry, in another worker process
    assert not list(store.rglob("*.building.*"))  # the killed build left nothing behind
    assert len(records(store)) == 24
    assert (tmp_path / "ray-run" / "leaderboard.csv").read_bytes() == local_smoke.read_bytes()


def test_a_failing_stage_is_reported_with_its_log_and_the_other_cells_finish(ray_cluster, tmp_path):
    store = tmp_path / "shared"
    bad = ["--set", "attacks.1.options.max_length=8"]  # every benign pair is cut before its response: it raises
    failed = frpo("--executor", "ray", "--ray-address", ray_cluster, "--retries", "1", *bad, store=store,
                  out=tmp_path / "ray-run")
    assert failed.returncode == 1
    assert "attack stage 'none / benign_full lr=0.0001 seed=0' failed after 1 retries" in failed.stderr
    assert "no training pair keeps a response token" in failed.stderr  # the log's tail is printed
    assert "5 stages that need it were skipped" in failed.stderr
    log = next((store / ".logs" / "attack").glob("*.log"), None)
    assert log is not None and "Traceback" in "".join(p.read_text() for p in (store / ".logs" / "attack").glob("*.log"))
    finished = {r["label"] for r in records(store)}
    assert "base=aligned defense=none attack=harmful_lora lr=0.001 seed=0 :: math_accuracy" in finished
    assert len(finished) == 18 and not (tmp_path / "ray-run" / "leaderboard.csv").exists()
    rerun = frpo(*bad, store=store, out=tmp_path / "rerun")  # resumes: only the failed stage and what needs it
    assert "24 stages: 18 cached, 6 to run" in rerun.stderr


def test_a_defense_trains_on_two_processes_of_one_node_in_a_placement_group(ray_cluster, tmp_path):
    from test_distributed import DEFENSES
    store = tmp_path / "shared"
    rr = ["--set", DEFENSES[0]]
    done = frpo("--executor", "ray", "--ray-address", ray_cluster, "--training-processes", "2", *rr, store=store,
                out=tmp_path / "ray-run")
    assert done.returncode == 0, done.stderr[-3000:]
    (harden,) = [r for r in records(store) if r["kind"] == "harden"]
    log = (store / ".logs" / "harden" / f"{harden['key'][:20]}.log").read_text()
    assert "torch.distributed.run --nproc_per_node 2" in log and "--only " + harden["key"] in log
    path = next(p.parent for p in (store / "harden").rglob("stage.json"))
    assert json.loads((path / "train_log.json").read_text())["processes"] == 2  # trained by both processes
    rows = (tmp_path / "ray-run" / "leaderboard.csv").read_text()
    assert ",rr,harmful_lora," in rows


def test_a_search_on_ray_gives_the_local_study(ray_cluster, tmp_path):
    """Trials asked two at a time run in parallel on the cluster; told in trial order, the study is the same."""
    from test_search import search_recipe, trial_table
    recipe = str(search_recipe(tmp_path, trials=4, parallel=2))
    local = frpo(store=tmp_path / "local", out=tmp_path / "local-run", recipe=recipe)
    assert local.returncode == 0, local.stderr[-2000:]
    done = frpo("--executor", "ray", "--ray-address", ray_cluster, store=tmp_path / "shared", out=tmp_path / "ray-run",
                recipe=recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert trial_table(tmp_path / "ray-run") == trial_table(tmp_path / "local-run")
    assert (tmp_path / "ray-run" / "leaderboard.csv").read_bytes() == (tmp_path / "local-run" / "leaderboard.csv").read_bytes()
    attacks = [r for r in records(tmp_path / "shared") if r["kind"] == "attack"]
    local_pids = {r["built_by"]["pid"] for r in records(tmp_path / "local") if r["kind"] == "attack"}
    assert len(local_pids) == 1 and len({r["built_by"]["pid"] for r in attacks}) > 1  # the trials ran on Ray workers


def test_a_local_ray_cluster_leaves_no_token_behind(tmp_path):
    """`--executor ray` without an address starts its own cluster with token authentication, its token in
    memory: no ~/.ray/auth_token is left to turn authentication on for clusters started later by hand."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", HF_HOME=os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface")))
    command = [sys.executable, "-m", "frpo_bench", "run", "smoke", "--store", str(tmp_path / "store"),
               "--out", str(tmp_path / "run"), "--executor", "ray", "--set", "attacks=[]",
               "--set", "leaderboard.capability_metric=null",
               "--set", "evaluations=[{evaluator: refusal, prompts: {dataset: demo_harmful, split: eval, n: 8}, metric: r}]"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "leaderboard.csv").is_file()
    assert not (home / ".ray" / "auth_token").exists()
