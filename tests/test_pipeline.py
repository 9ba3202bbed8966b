"""The smoke recipe end to end on the tiny model: interrupted, resumed, then served from cache."""
import csv
import dataclasses
import json
import os

import pytest

from frpo_bench.cli import main
from frpo_bench.engine import stages
from frpo_bench.models.device import reset_peak_memory


@pytest.mark.slow
def test_smoke_pipeline_resumes_and_caches(tmp_path, isolated_cache, capsys, monkeypatch):
    out = tmp_path / "run"
    real_attack = stages.BY_NAME["attack"]

    def crashing_attack(stage, build_dir, context):
        if stage.payload["attack"].name == "benign_full":
            (build_dir / "partial.safetensors").write_text("half-written")
            raise RuntimeError("simulated crash")
        real_attack.run(stage, build_dir, context)

    monkeypatch.setitem(stages.BY_NAME, "attack", dataclasses.replace(real_attack, run=crashing_attack))
    assert main(["run", "smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "attack stage 'none / benign_full" in err and "run again to resume" in err
    finished = {p.parent.parent.name for p in isolated_cache.rglob("COMPLETE")}
    assert {"base", "align", "attack"} <= finished
    assert not list(isolated_cache.rglob("partial.safetensors"))  # no half-written artifact survives
    assert not (out / "leaderboard.csv").exists()

    monkeypatch.setitem(stages.BY_NAME, "attack", real_attack)
    assert main(["run", "smoke", "--out", str(out)]) == 0
    resumed = capsys.readouterr()
    assert "24 stages: 3 cached, 21 to run" in resumed.err  # base, align and the finished attack were reused

    with open(out / "leaderboard.csv") as fh:
        rows = list(csv.DictReader(fh))
    cells = {(r["base"], r["defense"], r["attack"], r["attack_lr"]) for r in rows}
    assert cells == {("raw", "none", "none", ""), ("aligned", "none", "none", ""),
                     ("aligned", "none", "harmful_lora", "0.001"), ("aligned", "none", "benign_full", "0.0001")}
    metrics = {r["metric"] for r in rows}
    assert metrics == {"harmful_refusal", "benign_refusal", "math_accuracy", "math_accuracy:flexible"}
    for r in rows:
        assert r["evaluator"] and r["judge"] and r["dataset"] and r["dataset_revision"] and int(r["n"]) > 0
        assert float(r["ci95_low"]) <= float(r["mean"]) <= float(r["ci95_high"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["torch"] and manifest["resolved"]["model"]["id"] == "tiny-llama"
    # every stage says where it ran, in what dtype, for how long and at what memory peak
    records = [json.loads(p.with_name("stage.json").read_text()) for p in isolated_cache.rglob("COMPLETE")]
    assert len(records) == 24
    for record in records:
        # bytes, not KiB or pages: a process that runs torch holds over 50 MB, and none more than the machine has
        assert record["device"] == "cpu" and record["seconds"] >= 0, record
        assert 50e6 < record["peak_memory_bytes"] <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), record
        assert record["peak_memory_scope"] == reset_peak_memory()  # what the peak covers, as this host allows
        assert record["dtype"] in ("float32", "bfloat16", "-") and "size" in record, record
    assert {r["dtype"] for r in records if r["kind"] == "generate"} == {"float32"}  # smoke pins it
    assert set(manifest["build_seconds_by_stage_kind_and_device"]) == {f"{k}@cpu" for k in
                                                                       ("base", "align", "attack", "generate", "score")}
    # a later run's ETA comes from these measured seconds, not from the priors
    from frpo_bench.config import load_recipe
    from frpo_bench.engine.eta import History
    from frpo_bench.engine.plan import build_plan
    history = History.of_store(isolated_cache)
    for stage in build_plan(load_recipe("smoke")[0])[1]:
        recorded = json.loads((isolated_cache / stage.kind / stage.key[:20] / "stage.json").read_text())["seconds"]
        assert history.estimate(stage, "cpu") is not None
        if stage.kind in ("base", "align"):  # one of its sort: the estimate is its own measured time
            assert abs(history.estimate(stage, "cpu") - recorded) < 1e-9
    assert "leaderboard:" in resumed.out and "harmful_refusal" in resumed.out

    first_csv = (out / "leaderboard.csv").read_bytes()
    assert main(["run", "smoke", "--out", str(out)]) == 0
    again = capsys.readouterr()
    assert "24 stages: 24 cached, 0 to run" in again.err
    assert "everything from cache" in again.out
    assert (out / "leaderboard.csv").read_bytes() == first_csv

    assert main(["leaderboard", str(out)]) == 0
    assert (out / "leaderboard.csv").read_bytes() == first_csv
    assert main(["plan", "smoke"]) == 0
    assert "24 cached, 0 to run" in capsys.readouterr().out

    # the attacks' weights deleted once scored (a full fine-tune is ~0.5 GB per step kept): nothing retrains
    import shutil
    for attack in (isolated_cache / "attack").iterdir():
        shutil.rmtree(attack)
    assert main(["run", "smoke", "--out", str(out)]) == 0
    pruned = capsys.readouterr()
    assert "0 to run, 2 missing but unneeded" in pruned.err and "everything from cache" in pruned.out
    assert "2 attacks' folders are not in the store" in pruned.err  # their loss curves: said, not silently gone
    assert (out / "leaderboard.csv").read_bytes() == first_csv
    assert main(["plan", "smoke"]) == 0
    assert sum(line.lstrip().startswith("unneeded attack") for line in capsys.readouterr().out.splitlines()) == 2


def test_only_stages_a_missing_result_needs_are_built():
    """A missing stage is built when a result needs it; every ancestor of what is built must be there."""
    from frpo_bench.engine.plan import build_summary, stages_to_build
    from frpo_bench.engine.stages import Stage

    def stage(kind, key, *parents):
        return Stage(kind=kind, key=key, label=key, fields={}, parents=list(parents))
    base = stage("base", "b")
    attack = stage("attack", "a", base)
    final_gen = stage("generate", "g", attack)
    final_score = stage("score", "s", final_gen)
    point = stage("checkpoint", "c", attack)  # an intermediate step: read from the attack's folder
    point_gen = stage("generate", "g5", point)
    point_score = stage("score", "s5", point_gen)
    stages = [base, attack, final_gen, final_score, point, point_gen, point_score]
    keys = lambda todo: [s.key for s in todo]  # noqa: E731

    assert keys(stages_to_build(stages, set())) == ["b", "a", "g", "s", "c", "g5", "s5"]
    every_score = {"b", "s", "s5"}  # the weights deleted after scoring
    assert keys(stages_to_build(stages, every_score)) == []
    assert build_summary(stages, [], every_score) == "3 cached, 0 to run, 4 missing but unneeded (every result they lead to is cached)"
    # one score missing, its checkpoint still recorded: the attack it reads is rebuilt, the other branch is not
    cached = {"b", "s", "c"}
    assert keys(stages_to_build(stages, cached)) == ["a", "g5", "s5"]
    # what `--stages attack` asks for is a leaf of its list: built even with nothing downstream
    assert keys(stages_to_build([base, attack], {"b"})) == ["a"]
