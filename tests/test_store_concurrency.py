"""The store under crashes and concurrency: a killed run leaves nothing a rerun uses or keeps; two runs
on one store build every stage once; a finished artifact is never replaced; same key, same bytes."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frpo_bench.engine.store import Store
from frpo_bench.files import MARKER


def smoke_process(store: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "FRPO_BENCH_CACHE": str(store)}
    return subprocess.Popen([sys.executable, "-m", "frpo_bench", "run", "smoke", "--out", str(out), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def leftovers(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if ".building." in p.name]


def test_lock_waits_for_the_holder_and_clears_dead_builds(tmp_path):
    store = Store(tmp_path)
    final = store.path("attack", "k" * 64)
    dead = final.parent / f".{final.name}.building.dead123"
    dead.mkdir(parents=True)
    (dead / "trainer").mkdir()
    other = ("import sys, time; from frpo_bench.engine.store import Store\n"
             "with Store(sys.argv[1]).lock('attack', 'k' * 64, lambda m: print('WAIT', m, flush=True)):\n"
             "    print('GOT', time.time(), flush=True)\n")
    with store.lock("attack", "k" * 64):
        assert not dead.exists()  # the lock is ours, so no live process is building there
        child = subprocess.Popen([sys.executable, "-c", other, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        waiting = child.stdout.readline()
        released = time.time()
    out = child.communicate(timeout=30)[0]
    assert waiting.startswith("WAIT") and f"pid {os.getpid()}" in waiting  # it says whom it waits for
    assert float(out.split()[1]) >= released


def test_a_finished_artifact_is_never_replaced(tmp_path):
    store = Store(tmp_path)
    with store.lock("generate", "a" * 64), store.building("generate", "a" * 64, {}) as out:
        (out / "completions.jsonl").write_text("first\n")
    first = store.path("generate", "a" * 64)
    inode = first.stat().st_ino
    with store.building("generate", "a" * 64, {}) as out:  # a second build that should not have run
        (out / "completions.jsonl").write_text("second\n")
    assert (first / "completions.jsonl").read_text() == "first\n" and first.stat().st_ino == inode
    assert not leftovers(tmp_path)


@pytest.mark.slow
def test_kill_9_mid_attack_then_rerun_leaves_no_building_dirs(tmp_path):
    store, out = tmp_path / "store", tmp_path / "run"
    proc = smoke_process(store, out)
    seen, in_attack = [], False
    deadline = time.time() + 120
    for line in proc.stderr:  # wait until an attack has taken its first optimizer step
        seen.append(line)
        in_attack = in_attack or "] attack" in line
        if (in_attack and "step 1/" in line) or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert in_attack and "step 1/" in seen[-1], "".join(seen)
    assert leftovers(store), "the kill left no build directory: it came too late to test anything"
    finished_before = {p.parent for p in store.rglob(MARKER)}
    rerun = smoke_process(store, out)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert not leftovers(store), leftovers(store)
    finished_after = {p.parent for p in store.rglob(MARKER)}
    assert finished_before <= finished_after and len(finished_after) == 24
    for artifact in finished_before:  # nothing that finished before the kill was rebuilt
        assert json.loads((artifact / "stage.json").read_text())["built_by"]["pid"] != rerun.pid


@pytest.mark.slow
def test_two_concurrent_runs_on_one_store_build_every_stage_once(tmp_path):
    store = tmp_path / "store"
    procs = [smoke_process(store, tmp_path / f"run{i}") for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err
    built = [json.loads((tmp_path / f"run{i}" / "manifest.json").read_text())["stages_built"] for i in range(2)]
    artifacts = [p.parent for p in store.rglob(MARKER)]
    assert len(artifacts) == 24 and sum(built) == 24, (built, len(artifacts))
    builders = {json.loads((a / "stage.json").read_text())["built_by"]["pid"] for a in artifacts}
    assert builders <= {p.pid for p in procs}
    boards = [(tmp_path / f"run{i}" / "leaderboard.csv").read_bytes() for i in range(2)]
    assert boards[0] == boards[1]
    assert not leftovers(store)


def weights_digest(artifact: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(artifact.glob("*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()


def test_the_same_key_gives_the_same_bytes_in_fresh_processes(tmp_path):
    digests = []
    for name in ("a", "b"):
        store = tmp_path / name
        env = {**os.environ, "FRPO_BENCH_CACHE": str(store)}
        subprocess.run([sys.executable, "-m", "frpo_bench", "run", "smoke", "--stages", "align"], env=env, check=True,
                       capture_output=True)
        digests.append({kind: weights_digest(next(p for p in (store / kind).iterdir() if not p.name.startswith(".")))
                        for kind in ("base", "align")})
    assert digests[0] == digests[1]


def test_served_judges_do_not_share_cached_answers(tmp_path):
    from frpo_bench.evaluators.openai_judge import JudgeRequest, OpenAIJudge
    request = JudgeRequest("system", "user")
    a1 = OpenAIJudge("http://127.0.0.1:8001/v1", "judge", identity="served:/models/a@float32", cache_dir=tmp_path)
    a2 = OpenAIJudge("http://127.0.0.1:9002/v1", "judge", identity="served:/models/a@float32", cache_dir=tmp_path)
    b = OpenAIJudge("http://127.0.0.1:8001/v1", "judge", identity="served:/models/b@float32", cache_dir=tmp_path)
    assert a1.cache_key(request) == a2.cache_key(request)  # the same served model on another port: reused
    assert a1.cache_key(request) != b.cache_key(request)
    remote = [OpenAIJudge(url, "gpt-4o-mini", cache_dir=tmp_path) for url in (None, "https://other.example/v1")]
    assert remote[0].cache_key(request) != remote[1].cache_key(request)  # endpoints differ: answers may too
    assert "api_key" not in json.dumps(a1.request_body(request))
