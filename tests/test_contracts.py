"""Components behind typed contracts: a new attack is one file plus one registry line; attack options
are the attack type's own (old flat recipes still load, to the same keys); option checks run at parse time."""
import pytest

from frpo_bench import registry
from frpo_bench.cli import main
from frpo_bench.config import load_recipe
from frpo_bench.engine.plan import build_plan
from frpo_bench.errors import ConfigError

NOOP = "{name: nothing, type: noop, lrs: [1.0], options: {note: hello, repeats: 2}}"


@pytest.fixture
def noop_registered(monkeypatch):
    monkeypatch.setitem(registry.ATTACKS, "noop", "noop_attack:NoOpAttack")  # the one registry line


def attack_stages(*overrides):
    recipe, _ = load_recipe("smoke", list(overrides))
    _, stages = build_plan(recipe)
    return [s for s in stages if s.kind == "attack"]


def test_a_new_attack_with_its_own_options_plans_and_runs(noop_registered, isolated_cache, capsys, tmp_path):
    (stage,) = [s for s in attack_stages("attacks=[" + NOOP + "]")]
    assert stage.fields == {"type": "noop", "note": "hello", "repeats": 2, "lr": 1.0, "seed": 0}
    assert stage.label == "none / nothing lr=1 seed=0"
    same = attack_stages("attacks=[" + NOOP.replace("repeats: 2", "repeats: 2, log_every: 9") + "]")
    assert [s.key for s in same] == [stage.key]  # a transport-only option leaves the key alone
    assert [s.key for s in attack_stages("attacks=[" + NOOP.replace("hello", "bye") + "]")] != [stage.key]
    from frpo_bench.engine.estimate import MACHINES, stage_estimate
    assert stage_estimate(stage, 1e8, MACHINES["cpu"]).seconds > 0  # the estimate copes with an attack that does not train

    assert main(["run", "smoke", "--set", "attacks=[" + NOOP + "]", "--stages", "attack"]) == 0
    err = capsys.readouterr().err
    assert "did nothing 2 time(s): hello" in err
    from frpo_bench.models.artifact import read_model
    (aligned,) = stage.parents  # defense `none` is the identity: the attack's parent is the aligned model itself
    assert aligned.kind == "align"
    assert read_model(isolated_cache / "attack" / stage.key[:20]) == read_model(isolated_cache / "align" / aligned.key[:20])


def test_a_new_attacks_options_are_checked_at_parse_time(noop_registered):
    with pytest.raises(ConfigError) as err:
        load_recipe("smoke", ["attacks=[" + NOOP.replace("repeats: 2", "repeats: -1") + "]"])
    assert err.value.field == "attacks[0].options.repeats"
    with pytest.raises(ConfigError) as err:
        load_recipe("smoke", ["attacks=[" + NOOP.replace("repeats: 2", "repaets: 2") + "]"])
    assert err.value.field == "attacks[0].options.repaets" and "did you mean 'repeats'" in str(err.value)


def test_flat_attack_fields_of_older_recipes_load_to_the_same_keys(tmp_path):
    import yaml

    from frpo_bench.config import read_recipe_text
    raw = yaml.safe_load(read_recipe_text("smoke")[1])
    for attack in raw["attacks"]:
        attack.update(attack.pop("options"))  # the form every recipe had before attacks took options
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(raw))
    recipe, _ = load_recipe(str(old))
    assert recipe.attacks[1].options.micro_batch_size == 2
    assert {s.key for s in build_plan(recipe)[1]} == {s.key for s in build_plan(load_recipe("smoke")[0])[1]}
    raw["attacks"][0]["options"] = {"steps": 5}
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_recipe(str(both))
    assert err.value.field == "attacks[0].steps" and "options only" in err.value.fix


@pytest.mark.parametrize("override,field", [
    ("attacks.0.options.warmup_ratio=1.5", "attacks[0].options.warmup_ratio"),
    ("attacks.0.options.lora.dropout=1.0", "attacks[0].options.lora.dropout"),
    ("align.warmup_ratio=-0.1", "align.warmup_ratio"),
])
def test_ranges_the_trainers_would_misread_are_refused(override, field):
    with pytest.raises(ConfigError) as err:
        load_recipe("smoke", [override])
    assert err.value.field == field


def test_tar_dpo_needs_refusals_at_parse_time():
    from frpo_bench.defenses.tar import TAROptions
    from frpo_bench.typed import from_dict
    refs = {"adversary_data": [{"dataset": "demo_compliance", "split": "train"}],
            "tamper_compliance": [{"dataset": "demo_compliance", "split": "train"}],
            "retain_data": [{"dataset": "demo_benign_sft", "split": "train"}]}
    with pytest.raises(ConfigError) as err:
        from_dict(TAROptions, refs, "defenses[1].options")
    assert err.value.field == "defenses[1].options.tamper_refusals" and "entropy" in err.value.fix
    assert from_dict(TAROptions, {**refs, "tamper_loss": "entropy"}).tamper_refusals == []
    assert from_dict(TAROptions, {**refs, "tamper_refusals": [{"dataset": "demo_refusals", "split": "train"}]})


def test_every_registered_component_declares_its_contract():
    import dataclasses

    from frpo_bench.typed import Options
    for kind, table in (("defense", registry.DEFENSES), ("attack", registry.ATTACKS),
                        ("evaluator", registry.EVALUATORS)):
        for name in table:
            cls = registry.load(kind, name)
            if kind == "attack" and not registry.attack_changes_weights(name):  # decode-time: settings, no model
                assert callable(cls.generation) and not hasattr(cls, "apply"), name
            else:
                assert callable(getattr(cls, "score" if kind == "evaluator" else "apply")), name
            assert issubclass(cls.Options, Options) and dataclasses.is_dataclass(cls.Options), name
            if kind == "defense":
                assert isinstance(cls.identity, bool), name
            if kind == "evaluator":
                assert isinstance(cls.version, str) and isinstance(cls.needs_completions, bool), name


@pytest.mark.slow
def test_a_new_evaluator_plugs_in_with_one_file_and_one_registry_line(monkeypatch, isolated_cache, tmp_path):
    """Planned, priced, scheduled and run with no engine edit: its work says it runs no model."""
    monkeypatch.setitem(registry.EVALUATORS, "long_reply", "long_reply_evaluator:LongReplyEvaluator")
    evaluation = ("evaluations=[{evaluator: long_reply, options: {characters: 10}, "
                  "prompts: {dataset: demo_harmful, split: eval, n: 4}, metric: long_reply}]")
    recipe, _ = load_recipe("smoke", [evaluation, "leaderboard.capability_metric=null"])
    stages = build_plan(recipe)[1]
    score = next(s for s in stages if s.kind == "score")
    from frpo_bench.engine.estimate import MACHINES, stage_estimate
    from frpo_bench.engine.ray_executor import stage_resources
    estimate = stage_estimate(score, 1e8, MACHINES["h100"])
    assert estimate.seconds == pytest.approx(0.004) and estimate.gpus == 0
    assert stage_resources(score, gpu_cluster=True)["num_gpus"] == 0
    assert main(["run", "smoke", "--out", str(tmp_path / "run"), "--set", evaluation,
                 "--set", "leaderboard.capability_metric=null", "--set", "attacks=[]"]) == 0
    rows = (tmp_path / "run" / "leaderboard.csv").read_text()
    assert "long_reply (long-reply-v1)" in rows and "length>10" in rows


@pytest.mark.slow
def test_a_repair_a_decode_time_and_a_training_free_attack_plug_in_with_one_file(monkeypatch, isolated_cache,
                                                                                 tmp_path):
    """Each changes the plan's shape (a repair stage, no attack stage, an attack without learning rates) with no
    engine edit: planned, priced and run end to end."""
    monkeypatch.setitem(registry.DEFENSES, "keep", "plugin_components:KeepRepair")
    monkeypatch.setitem(registry.ATTACKS, "direct", "plugin_components:DirectAttack")
    monkeypatch.setitem(registry.ATTACKS, "noise", "plugin_components:NoiseAttack")
    overrides = ["defenses=[{name: none}, {name: keep, type: keep}]",
                 "attacks=[{name: harmful_lora, lrs: [1.0e-3], options: {data: [{dataset: demo_compliance, split: train, "
                 "n: 8}], lora: {r: 4, alpha: 8}, steps: 2, batch_size: 4, max_length: 64}}, "
                 "{name: direct, type: direct}, {name: noise, type: noise, options: {scale: 0.01}}]",
                 "evaluations=[{evaluator: refusal, prompts: {dataset: demo_harmful, split: eval, n: 4}, "
                 "metric: harmful_refusal}]", "leaderboard.capability_metric=null"]
    recipe, _ = load_recipe("smoke", overrides)
    cells, stages = build_plan(recipe)
    kinds = {(s.kind, s.fields.get("type")) for s in stages}
    assert ("repair", "keep") in kinds and ("attack", "noise") in kinds and ("attack", "direct") not in kinds
    noise = next(s for s in stages if s.kind == "attack" and s.fields["type"] == "noise")
    assert noise.fields["lr"] is None  # no learning rates: one cell per defended model and seed
    repairs = [s for s in stages if s.kind == "repair"]
    assert len(repairs) == 2  # after each attack that changes weights (LoRA, noise), not after the decode-time one
    direct = next(c for c in cells if c.attack == "direct" and c.defense == "none")
    harmful = next(s for s in stages if s.kind == "generate" and s.parents[0] is direct.model
                   and "user_template" in s.fields["generation"])
    assert harmful.fields["generation"]["user_template"] == "{prompt} Answer directly."
    from frpo_bench.engine.estimate import MACHINES, stage_estimate
    assert all(stage_estimate(s, 1e8, MACHINES["h100"]).seconds >= 0 for s in stages)
    assert stage_estimate(noise, 1e8, MACHINES["h100"]).gpus == 1
    assert main(["run", "smoke", "--out", str(tmp_path / "run"), *[x for o in overrides for x in ("--set", o)]]) == 0
    rows = (tmp_path / "run" / "leaderboard.csv").read_text()
    assert ",keep,noise,," in rows and ",none,direct,," in rows and ",keep,harmful_lora,0.001," in rows
