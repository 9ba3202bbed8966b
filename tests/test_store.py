"""Content-addressed keys and atomic artifacts."""
import pytest

from frpo_bench.config import load_recipe
from frpo_bench.engine.plan import build_plan
from frpo_bench.engine.store import Store
from frpo_bench.files import MARKER


def keys(*overrides):
    recipe, _ = load_recipe("smoke", list(overrides))
    _, stages = build_plan(recipe)
    return {(s.kind, s.label): s.key for s in stages}


def test_same_spec_same_key():
    assert keys() == keys()


def test_lr_change_gives_new_attack_key_and_keeps_the_rest():
    before, after = keys(), keys("attacks.0.lrs=[2e-3]")
    assert before[("base", "tiny-llama")] == after[("base", "tiny-llama")]
    assert before[("align", "safety SFT")] == after[("align", "safety SFT")]
    old = {k for (kind, _), k in before.items() if kind == "attack"}
    new = {k for (kind, _), k in after.items() if kind == "attack"}
    assert len(old - new) == 1 and len(new - old) == 1


def test_transport_fields_do_not_change_keys():
    base = keys()
    assert keys("generation.batch_size=3") == base
    assert keys("attacks.1.options.micro_batch_size=1") == base
    assert keys("evaluations.2.options.batch_size=1") == base
    assert keys("attacks.0.name=renamed")  .keys() != base.keys()  # labels differ...
    assert set(keys("attacks.0.name=renamed").values()) == set(base.values())  # ...but not the keys


def test_output_changing_fields_change_keys():
    base = set(keys().values())
    for override in ("generation.max_new_tokens=9", "attacks.1.options.batch_size=2", "align.steps=4", "seeds=[1]"):
        assert set(keys(override).values()) != base, override


def test_failed_build_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.building("attack", "k" * 64, {}) as out:
            (out / "weights.bin").write_text("half")
            raise RuntimeError("killed mid-stage")
    assert not store.has("attack", "k" * 64)
    assert list((tmp_path / "attack").iterdir()) == []


def test_unmarked_directory_is_rebuilt(tmp_path):
    store = Store(tmp_path)
    stale = store.path("generate", "a" * 64)
    stale.mkdir(parents=True)
    (stale / "completions.jsonl").write_text("truncated")
    assert not store.has("generate", "a" * 64)
    with store.building("generate", "a" * 64, {"x": 1}) as out:
        (out / "completions.jsonl").write_text("full\n")
    assert store.has("generate", "a" * 64)
    assert (stale / "completions.jsonl").read_text() == "full\n"
    assert (stale / MARKER).is_file() and (stale / "stage.json").is_file()


@pytest.mark.parametrize("name", ["smoke", "demo", "demo_rl", "demo_baselines", "demo_attacks", "demo_defenses", "gate", "paper"])
def test_stage_keys_of_every_packaged_recipe_are_stable(name, monkeypatch, request):
    """A change to what enters a key silently orphans every user's cache: it must be deliberate
    (bump store.KEY_VERSION or the affected field) and show up here. What resolves by the machine is
    pinned: `paper`'s backend auto to hf, the demos' dtype and bf16 auto to float32 (their keys on a
    machine where auto means float32; bf16 machines get the keys of the bf16 settings)."""
    monkeypatch.setenv("FRPO_BENCH_AUTO_DTYPE", "float32")
    monkeypatch.setenv("FRPO_BENCH_AUTO_ATTENTION", "sdpa")  # the demo's attention auto, pinned like its dtype
    import json
    from pathlib import Path

    from frpo_bench.config import load_recipe
    from frpo_bench.engine.plan import build_plan
    if name == "paper":  # the session's paper plan (one build, ~20 s), valid here since paper leaves nothing to
        from frpo_bench.engine.plan import resolve_installed  # the machine once its backend is set
        assert resolve_installed(load_recipe(name, ["generation.backend=hf"])[0]) == {}
        _, stages = request.getfixturevalue("paper_plan")
    else:
        _, stages = build_plan(load_recipe(name)[0])
    keys = {f"{s.kind} {s.label}": s.key for s in stages}
    assert len(keys) == len(stages), "two stages share a label: the goldens (and the progress lines) cannot tell them apart"
    golden = json.loads((Path(__file__).parent / "golden" / "stage_keys.json").read_text())[name]
    # named differences, not `keys == golden`: pytest's diff of two 25,000-key dicts ran 10+ minutes on a 2-core CI
    moved = sorted(k for k in golden if k in keys and keys[k] != golden[k])
    added, gone = sorted(set(keys) - set(golden)), sorted(set(golden) - set(keys))
    assert not (moved or added or gone), (f"{len(moved)} keys moved, e.g. {moved[:3]}; {len(added)} stages new, e.g. "
                                          f"{added[:3]}; {len(gone)} gone, e.g. {gone[:3]}")
