"""What the store reads back is checked: corrupt, truncated and half-written artifacts of every kind are
reported by name and rebuilt, never used; a moved or copied store runs from its own files."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

from frpo_bench.cli import main

pytestmark = pytest.mark.slow
SMALL = ["--set", "evaluations=[{evaluator: refusal, prompts: {dataset: demo_harmful, split: eval, n: 8}, "
                  "metric: harmful_refusal}]", "--set", "leaderboard.capability_metric=null"]


def run(store: Path, out: Path, *extra: str) -> int:
    return main(["run", "smoke", "--store", str(store), "--out", str(out), *SMALL, *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    assert run(root / "store", root / "run") == 0
    return root


@pytest.fixture
def store(built, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(built / "store", copy, symlinks=True)
    return copy


def leaderboard(out: Path) -> str:
    return (out / "leaderboard.csv").read_text()


def one(store: Path, pattern: str) -> Path:
    return sorted(store.glob(pattern))[0]


def garble(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "random":
        path.write_bytes(os.urandom(len(data)))  # same size: only its hash tells
    elif how == "half":
        path.write_bytes(data[: len(data) // 2])
    else:  # one byte flipped in the middle
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])


@pytest.mark.parametrize("pattern,how", [
    ("score/*/result.json", "random"),  # once: a UnicodeDecodeError traceback, and `plan` said cached
    ("score/*/result.json", "half"),  # once: a JSONDecodeError traceback
    ("score/*/samples.jsonl", "half"),
    ("generate/*/completions.jsonl", "flip"),
    ("attack/*/adapter_model.safetensors", "half"),  # once: "cached" forever, every load failing
    ("align/*/model.safetensors", "half"),
    ("attack/*/model.json", "random"),
    ("attack/*/stage.json", "flip"),
])
def test_a_corrupt_artifact_is_named_and_rebuilt_never_used(built, store, tmp_path, pattern, how, capsys):
    target = one(store, pattern)
    garble(target, how)
    assert run(store, tmp_path / "run") == 0
    err = capsys.readouterr().err
    stage = target.relative_to(store).parts[:2]
    assert f"store: {'/'.join(stage)} is corrupt" in err and str(target.parent) in err
    assert leaderboard(tmp_path / "run") == leaderboard(built / "run")  # rebuilt: the same results
    assert run(store, tmp_path / "again") == 0  # and now intact: nothing left to rebuild
    assert "everything from cache" in capsys.readouterr().out


def test_weights_that_fail_to_load_are_hashed_found_corrupt_and_rebuilt(built, store, tmp_path, monkeypatch, capsys):
    """Large weights are checked by size on every look; same-size damage shows when loading fails."""
    from frpo_bench.engine import store as store_module
    monkeypatch.setattr(store_module, "VERIFY_HASH_BYTES", 0)  # as if every weight file were large
    weights = one(store, "align/*/model.safetensors")
    data = bytearray(weights.read_bytes())
    data[8:40] = b"}" * 32  # the safetensors header, same size: loading fails
    weights.write_bytes(bytes(data))
    for generated in store.glob("generate/*"):  # so that the weights are needed again
        shutil.rmtree(generated)
    for scored in store.glob("score/*"):
        shutil.rmtree(scored)
    assert run(store, tmp_path / "run") == 0
    err = capsys.readouterr().err
    assert "is corrupt" in err and "building it again" in err and "model.safetensors" in err
    assert leaderboard(tmp_path / "run") == leaderboard(built / "run")


def test_verify_hashes_every_file_and_repair_removes_the_corrupt(store, capsys):
    assert main(["verify", "--store", str(store)]) == 0
    assert "all intact" in capsys.readouterr().out
    weights = one(store, "base/*/model.safetensors")
    garble(weights, "flip")  # same size: only a full hash finds it
    assert main(["verify", "--store", str(store)]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT base/" in out and "sha256" in out and weights.is_file()
    assert main(["verify", "--store", str(store), "--repair"]) == 1
    assert not weights.parent.exists()


def test_a_moved_store_runs_from_cache_and_a_copy_reads_only_its_own_files(built, tmp_path, capsys):
    original = tmp_path / "a"
    shutil.copytree(built / "store", original, symlinks=True)
    for generated in original.glob("generate/*"):  # generation loads the LoRA attack's lineage again
        shutil.rmtree(generated)
    for scored in original.glob("score/*"):
        shutil.rmtree(scored)
    moved = tmp_path / "b"
    original.rename(moved)
    assert run(moved, tmp_path / "run_moved") == 0
    assert leaderboard(tmp_path / "run_moved") == leaderboard(built / "run")
    records = [json.loads(p.read_text()) for p in moved.glob("*/*/model.json")]
    assert records and not any(str(built) in json.dumps(r) or str(original) in json.dumps(r) for r in records)

    copy = tmp_path / "c"
    shutil.copytree(moved, copy, symlinks=True)
    for generated in copy.glob("generate/*"):
        shutil.rmtree(generated)
    for scored in copy.glob("score/*"):
        shutil.rmtree(scored)
    for weights in moved.rglob("*.safetensors"):  # were the copy to read the original's weights, it would fail
        weights.write_bytes(b"")
    assert run(copy, tmp_path / "run_copy") == 0
    assert leaderboard(tmp_path / "run_copy") == leaderboard(built / "run")


def test_a_plan_lists_a_corrupt_stage_as_to_run(store, capsys):
    garble(one(store, "score/*/result.json"), "random")
    assert main(["plan", "smoke", "--store", str(store), *SMALL]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "CORRUPT" in x)
    assert line.split()[:2] == ["to", "run"] and "score" in line and "result.json" in line


@pytest.mark.parametrize("signal_name,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_mid_stage_exits_with_one_line_and_leaves_nothing_half_built(tmp_path, signal_name, code):
    import signal
    store = tmp_path / "store"
    command = [sys.executable, "-m", "frpo_bench", "run", "smoke", "--store", str(store), "--out", str(tmp_path / "run"),
               *SMALL]
    # a background shell job (`make test &`) passes SIGINT on ignored, which the CLI respects: the run gets a
    # foreground process's handlers, whatever started pytest
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in process.stderr:  # wait until a stage is being built
        lines.append(line)
        if line.startswith("[3/"):
            break
    process.send_signal(getattr(signal, signal_name))  # stage 3 (an attack) is training
    rest = process.stderr.read()
    assert process.wait(timeout=120) == code
    assert "Traceback" not in rest and "[12/12]" not in rest, rest
    assert [line for line in rest.splitlines() if line.strip()][-1].endswith("the same command resumes"), rest
    assert not list(store.glob("*/.*.building.*"))  # the stage in progress left nothing
    assert main(["run", "smoke", "--store", str(store), "--out", str(tmp_path / "run"), *SMALL]) == 0


@pytest.fixture
def full_disk(tmp_path, request):
    """A small filesystem of its own (tmpfs, 1 MiB unless the test says; root can mount one, as in CI)."""
    mount = tmp_path / "full"
    mount.mkdir()
    size = getattr(request, "param", "1m")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    require(done.returncode == 0, f"a small tmpfs cannot be mounted here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_the_store_is_one_line_and_keeps_what_finished(full_disk, tmp_path, capsys):
    code = main(["run", "smoke", "--store", str(full_disk / "store"), "--out", str(tmp_path / "run"), *SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "Traceback" not in err
    assert not list((full_disk / "store").glob("*/.*.building.*"))
    for marker in (full_disk / "store").glob("*/*/COMPLETE"):  # what finished is intact
        from frpo_bench.engine.store import Store
        assert Store(full_disk / "store").verify(marker.parent.parent.name, marker.parent.name) is None


@pytest.mark.parametrize("full_disk", ["64k"], indirect=True)  # the smoke run's outputs need more
def test_a_full_disk_under_out_is_one_line_naming_the_fix(built, store, full_disk, capsys):
    code = main(["run", "smoke", "--store", str(store), "--out", str(full_disk / "run"), *SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "no space left on the device" in err and "--out" in err and "Traceback" not in err
    assert not [p for p in (full_disk / "run").rglob("*") if p.name.endswith(".tmp")]  # no half-written file
