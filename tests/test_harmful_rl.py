"""The harmful RL attack in a recipe: planned like any training attack (its sweep's lr in the key, not the
options'), priced by the cost model, and end to end on smoke with its trajectory and compute."""
import csv

import pytest

from frpo_bench.cli import main
from frpo_bench.config import load_recipe
from frpo_bench.engine.plan import build_plan
from frpo_bench.errors import ConfigError

HARMFUL_RL = ("{name: hrl, type: harmful_rl, lrs: [5.0e-3], eval_steps: [1], options: {harmful_prompts: "
              "{dataset: demo_harmful, split: train, n: 8}, steps: 2, prompts_per_step: 4, num_generations: 4, "
              "max_completion_length: 12, lora: {r: 4, alpha: 8}, warmup_ratio: 0.0, lr_scheduler: constant}}")


def test_harmful_rl_plans_with_its_sweeps_lr_and_is_priced():
    from frpo_bench.engine.estimate import stage_work
    recipe, _ = load_recipe("smoke", [f"attacks=[{HARMFUL_RL}]"])
    cells, stages = build_plan(recipe)
    (attack,) = {s.key: s for s in stages if s.kind == "attack"}.values()
    assert attack.fields["lr"] == 5e-3  # the sweep's (the options' own lr is left out of the key)
    assert attack.fields["safety_reward"] == "compliance" and attack.fields["benign_prompts"] is None
    assert [d["dataset"] for d in attack.fields["data"]] == ["demo_harmful"]
    assert any(s.kind == "checkpoint" for s in stages)  # its step-1 trajectory point
    work = stage_work(attack)
    assert work.runs_model and work.steps


@pytest.mark.parametrize("old, new, field", [("steps: 2,", "steps: 2, safety_reward: refusal,", "safety_reward"),
                                             ("num_generations: 4", "num_generations: 1", "num_generations")])
def test_a_bad_harmful_rl_setting_names_its_field(old, new, field):
    assert old in HARMFUL_RL
    with pytest.raises(ConfigError) as err:
        load_recipe("smoke", [f"attacks=[{HARMFUL_RL.replace(old, new, 1)}]"])
    assert err.value.field == f"attacks[0].options.{field}"


@pytest.mark.slow
def test_harmful_rl_runs_end_to_end_on_smoke(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "smoke", "--out", str(out), "--set", f"attacks=[{HARMFUL_RL}]"]) == 0
    with open(out / "leaderboard.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["attack"] == "hrl" and r["metric"] == "harmful_refusal"]
    assert rows and all(r["attack_steps"] == "2" and int(r["attack_tokens"]) > 0 for r in rows)
    with open(out / "trajectory.csv") as fh:
        curve = [r for r in csv.DictReader(fh) if r["attack"] == "hrl"]
    assert {r["metric"] for r in curve} >= {"harmful_refusal", "train_reward", "train_loss"}
    assert {r["step"] for r in curve if r["metric"] == "harmful_refusal"} >= {"0", "1", "2"}


@pytest.mark.parametrize("old, new", [("steps: 2", "steps: 3"), ("num_generations: 4", "num_generations: 2"),
                                      ("max_completion_length: 12", "max_completion_length: 16"),
                                      ("r: 4", "r: 8"), ("lrs: [5.0e-3]", "lrs: [1.0e-3]"),
                                      ("steps: 2,", "steps: 2, beta: 0.05,"),
                                      ("steps: 2,", "steps: 2, safety_reward: strongreject_score,"),
                                      ("n: 8}", "n: 6}")])
def test_every_option_changes_the_harmful_rl_key(old, new):
    def key(text):
        _, stages = build_plan(load_recipe("smoke", [f"attacks=[{text}]"])[0])
        return {s.key for s in stages if s.kind == "attack"}
    assert old in HARMFUL_RL
    assert key(HARMFUL_RL).isdisjoint(key(HARMFUL_RL.replace(old, new, 1)))
