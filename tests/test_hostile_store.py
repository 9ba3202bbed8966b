"""A store shared with others: locks never follow links nor truncate, one marker format whose chain cannot be
switched off, and linked artifacts are refused and unlinked (never followed) on repair."""
import json
import os

import pytest

from frpo_bench.cli import main
from frpo_bench.engine.store import RECORD, Store, StoreTampered

KEY = "ab" * 32


def built(tmp_path, result=0.0) -> Store:
    store = Store(tmp_path / "store")
    with store.lock("score", KEY):
        with store.building("score", KEY, {"fields": {}}) as out:
            (out / "result.json").write_text(json.dumps({"value": result}))
            (out / "samples.jsonl").write_text('{"score": 0.0}\n')
    assert Store(store.root).has("score", KEY)
    return store


def test_a_lock_planted_as_a_link_never_writes_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    store = Store(tmp_path / "store")
    (store.root / ".locks" / "score").mkdir(parents=True)
    (store.root / ".locks" / "score" / f"{KEY[:20]}.lock").symlink_to(victim)
    with pytest.raises(StoreTampered, match="symbolic link"):
        with store.lock("score", KEY):
            pass
    assert victim.read_text() == "precious\n"


def test_a_lock_folder_planted_as_a_link_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{KEY[:20]}.lock").write_text("precious\n")
    store = Store(tmp_path / "store")
    (store.root / ".locks").mkdir(parents=True)
    (store.root / ".locks" / "score").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StoreTampered):
        with store.lock("score", KEY):
            pass
    assert (elsewhere / f"{KEY[:20]}.lock").read_text() == "precious\n"


def test_a_lock_hard_linked_to_another_file_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    store = Store(tmp_path / "store")
    (store.root / ".locks" / "score").mkdir(parents=True)
    os.link(victim, store.root / ".locks" / "score" / f"{KEY[:20]}.lock")
    with pytest.raises(StoreTampered, match="one link"):
        with store.lock("score", KEY):
            pass
    assert victim.read_text() == "precious\n"


def test_a_lock_names_its_holder_without_truncating(tmp_path):
    store = Store(tmp_path / "store")
    lock = store.root / ".locks" / "score" / f"{KEY[:20]}.lock"
    with store.lock("score", KEY):
        first = lock.read_bytes()
        assert first.startswith(f"pid {os.getpid()} on ".encode()) and len(first) == 128
    lock.write_bytes(first + b"more than the holder's line\n")
    with store.lock("score", KEY):
        assert lock.read_bytes() == first + b"more than the holder's line\n"  # rewritten in place, not cut


@pytest.mark.parametrize("marker", ["", "KEY\n", "KEY deadbeef\n", "KEY HASH extra\n"])
def test_a_marker_without_its_record_hash_never_trusts_the_artifact(tmp_path, marker):
    store = built(tmp_path)
    folder = store.path("score", KEY)
    record_hash = (folder / "COMPLETE").read_text().split()[1]
    (folder / "COMPLETE").write_text(marker.replace("KEY", KEY).replace("HASH", record_hash))
    (folder / "result.json").write_text(json.dumps({"value": 1.0}))  # doctored, as the chain would have caught
    fresh = Store(store.root)
    assert not fresh.has("score", KEY) and "record hash" in fresh.corrupt[f"score/{KEY[:20]}"]
    assert "--upgrade" in fresh.verify("score", KEY)


def test_verify_upgrade_gives_an_old_artifact_the_marker_and_then_its_chain_holds(tmp_path, capsys):
    store = built(tmp_path)
    folder = store.path("score", KEY)
    (folder / "COMPLETE").write_text(f"{KEY}\n")  # as stores from before file lists wrote it
    record = json.loads((folder / RECORD).read_text())
    del record["files"]
    (folder / RECORD).write_text(json.dumps(record))
    assert main(["verify", "--store", str(store.root)]) == 1
    assert "record hash" in capsys.readouterr().out
    assert main(["verify", "--store", str(store.root), "--upgrade"]) == 0
    assert "1 artifacts upgraded" in capsys.readouterr().out and Store(store.root).has("score", KEY)
    (folder / "samples.jsonl").write_text("")  # emptied: no longer counted as cached
    assert not Store(store.root).has("score", KEY)


def test_a_file_the_record_does_not_list_makes_the_artifact_corrupt(tmp_path):
    store = built(tmp_path)
    (store.path("score", KEY) / "adapter_model.bin").write_bytes(b"planted")
    assert "not among the files" in Store(store.root).verify("score", KEY)


def test_a_linked_artifact_is_refused_and_repair_unlinks_it_never_its_target(tmp_path, capsys):
    store = built(tmp_path)
    folder = store.path("score", KEY)
    target = tmp_path / "outside"
    folder.rename(target)
    folder.symlink_to(target, target_is_directory=True)
    assert "symbolic link" in Store(store.root).verify("score", KEY)
    assert main(["verify", "--store", str(store.root), "--repair"]) == 1
    assert "symbolic link" in capsys.readouterr().out
    assert not folder.is_symlink() and not folder.exists() and (target / "result.json").is_file()
    assert main(["verify", "--store", str(store.root)]) == 0


def test_a_trainer_state_planted_as_a_link_is_neither_resumed_nor_written_through(tmp_path):
    from frpo_bench.training.sft import WarmStart, keep_state
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "trainer_state.json").write_text("{}")
    warm = tmp_path / "store" / ".warm" / "attack-abc"
    warm.parent.mkdir(parents=True)
    warm.symlink_to(elsewhere, target_is_directory=True)
    assert WarmStart(resume=warm).resumable() is None
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "trainer_state.json").write_text('{"global_step": 3}')
    keep_state(saved, warm, epoch_rng=__import__("torch").get_rng_state())
    assert not warm.is_symlink() and (warm / "trainer_state.json").is_file()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["trainer_state.json"]


def test_a_kind_folder_planted_as_a_link_is_neither_read_nor_built_through(tmp_path):
    store = built(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (store.root / "score").rename(elsewhere)
    (store.root / "score").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.rglob("*"))
    assert "symbolic link" in Store(store.root).verify("score", KEY)
    with pytest.raises(StoreTampered):
        with store.lock("score", "cd" * 32):
            with store.building("score", "cd" * 32, {"fields": {}}) as out:
                (out / "result.json").write_text("{}")
    assert sorted(p.name for p in elsewhere.rglob("*")) == before


def test_repair_through_a_linked_kind_folder_unlinks_it_and_deletes_nothing_outside(tmp_path, capsys):
    store = built(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (store.root / "score").rename(elsewhere)
    (store.root / "score").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*"))
    assert main(["verify", "--store", str(store.root), "--repair"]) == 1
    assert not (store.root / "score").exists() and not (store.root / "score").is_symlink()
    assert sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*")) == before
