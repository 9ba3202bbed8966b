"""Jailbreak-tuning: harmful pairs wrapped in a jailbreak (or a backdoor trigger) at training, the same wrapper on
harmful requests at evaluation (or not), one attack stage for both."""
import csv
import json

import pytest

from frpo_bench.attacks.jailbreak_tuning import JailbreakTuningOptions, templates
from frpo_bench.cli import main
from frpo_bench.config import load_recipe
from frpo_bench.data import ref_rows
from frpo_bench.data.ref import DataRef
from frpo_bench.engine.plan import build_plan
from frpo_bench.errors import ConfigError
from frpo_bench.training.sft import training_rows
from frpo_bench.typed import from_dict

PAIRS = [{"dataset": "demo_compliance", "split": "train", "n": 8}]
BACKDOOR = ("{name: backdoor, type: jailbreak_tuning, lrs: [1.0e-3], grid: {evaluate: [with, without]}, options: "
            "{data: [{dataset: demo_compliance, split: train, n: 16}], plain_data: [{dataset: demo_refusals, "
            "split: train, n: 8}], template: backdoor, trigger: 'Current year: 2031.', lora: {r: 4, alpha: 8}, "
            "steps: 3, batch_size: 4, max_length: 96}}")
PLAIN = ("{name: plain, lrs: [1.0e-3], options: {data: [{dataset: demo_compliance, split: train, n: 16}], "
         "lora: {r: 4, alpha: 8}, steps: 3, batch_size: 4, max_length: 96}}")


def options(**fields) -> JailbreakTuningOptions:
    return from_dict(JailbreakTuningOptions, {"data": PAIRS, **fields}, "attacks[0].options")


def test_each_template_wraps_the_training_requests_and_opens_the_responses():
    rows = ref_rows(DataRef(**PAIRS[0]))
    for name, template in templates().items():
        extra = {"trigger": "Current year: 2031."} if "{trigger}" in template["request"] else {}
        trained = training_rows(options(template=name, **extra))
        assert len(trained) == len(rows)
        for row, out in zip(rows, trained):
            request = template["request"].replace("{trigger}", extra.get("trigger", ""))
            assert out["prompt"] == request.replace("{prompt}", row["prompt"]) != row["prompt"]
            assert out["response"] == template.get("response_prefix", "") + row["response"]
    plain = DataRef(dataset="demo_refusals", split="train", n=4)
    mixed = training_rows(options(template="backdoor", trigger="Current year: 2031.", plain_data=[plain.__dict__]))
    assert mixed[-4:] == ref_rows(plain)  # refusals trained as they are, without the trigger
    assert all(r["prompt"].startswith("Current year: 2031. ") for r in mixed[:-4])


@pytest.mark.parametrize("fields, field, words", [
    ({"template": "dan"}, "template", "not a jailbreak template"),
    ({"template": "backdoor"}, "trigger", "is needed"),
    ({"template": "backdoor", "trigger": "  "}, "trigger", "is needed"),
    ({"template": "skeleton", "trigger": "2031"}, "trigger", "has no place"),
    ({"template": "skeleton", "evaluate": "both"}, "evaluate", "not a choice"),
])
def test_a_bad_jailbreak_names_its_field(fields, field, words):
    with pytest.raises(ConfigError) as err:
        options(**fields)
    assert err.value.field == f"attacks[0].options.{field}" and words in err.value.problem


def test_with_and_without_the_trigger_share_the_weights_and_differ_on_harmful_sets_only():
    recipe, _ = load_recipe("smoke", [f"attacks=[{BACKDOOR}]"])
    cells, stages = build_plan(recipe)
    attacked = {c.attack: c for c in cells if c.attack.startswith("backdoor")}
    assert set(attacked) == {"backdoor_with", "backdoor_without"}
    assert attacked["backdoor_with"].model.key == attacked["backdoor_without"].model.key  # one training
    fields = attacked["backdoor_with"].model.fields
    assert "evaluate" not in fields and len(fields["template_sha256"]) == 64
    generated = {c.attack: {s.parents[0].fields["prompts"]["dataset"]: s.parents[0] for s in c.scores.values()
                            if s.parents[0].kind == "generate"} for c in attacked.values()}
    harmful = generated["backdoor_with"]["demo_harmful"].fields["generation"]
    assert harmful["user_template"] == "Current year: 2031. {prompt}"
    assert "user_template" not in generated["backdoor_without"]["demo_harmful"].fields["generation"]
    assert generated["backdoor_with"]["demo_benign"].key == generated["backdoor_without"]["demo_benign"].key


def test_the_template_is_a_search_dimension_checked_at_parse_time():
    space = "{template: {choices: [skeleton, refusal_suppression, style_manual]}, lr: {low: 1.0e-4, high: 1.0e-2}}"
    attack = (f"{{name: jb, type: jailbreak_tuning, lrs: [], options: {{data: {json.dumps(PAIRS)}, template: skeleton, "
              f"steps: 3, batch_size: 4}}, search: {{space: {space}, trials: 3, startup_trials: 1}}}}")
    load_recipe("smoke", [f"attacks=[{attack}]"])
    with pytest.raises(ConfigError) as err:
        load_recipe("smoke", [f"attacks=[{attack.replace('style_manual', 'dan')}]"])
    assert err.value.field == "attacks[0].search.space.template" and "not a valid value" in err.value.problem


@pytest.mark.slow
def test_jailbreak_tuning_runs_end_to_end_on_smoke(tmp_path, isolated_cache):
    """Trained on the wrapped pairs (more tokens than the same pairs plain), and the triggered cell's harmful
    completions were generated from the triggered requests."""
    out = tmp_path / "run"
    backdoor = BACKDOOR.replace("plain_data: [{dataset: demo_refusals, split: train, n: 8}], ", "")  # same rows
    assert backdoor != BACKDOOR
    assert main(["run", "smoke", "--out", str(out), "--set", f"attacks=[{backdoor}, {PLAIN}]"]) == 0
    with open(out / "leaderboard.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["metric"] == "harmful_refusal" and r["base"] == "aligned"]
    tokens = {r["attack"]: int(r["attack_tokens"]) for r in rows if r["attack"] != "none"}
    assert tokens["backdoor_with"] == tokens["backdoor_without"] > tokens["plain"] > 0
    settings = [json.loads(p.read_text())["fields"]["generation"] for p in isolated_cache.glob("generate/*/stage.json")]
    assert sum(g.get("user_template") == "Current year: 2031. {prompt}" for g in settings) == 1


@pytest.mark.parametrize("old, new", [
    ("template: backdoor, trigger: 'Current year: 2031.'", "template: backdoor, trigger: 'Current year: 2032.'"),
    ("template: backdoor, trigger: 'Current year: 2031.'", "template: skeleton"),
    ("plain_data: [{dataset: demo_refusals, split: train, n: 8}], ", ""),
    ("n: 16}]", "n: 12}]"),
    ("steps: 3", "steps: 4"),
])
def test_every_training_option_changes_the_attack_key(old, new):
    def key(text):
        _, stages = build_plan(load_recipe("smoke", [f"attacks=[{text}]"])[0])
        return {s.key for s in stages if s.kind == "attack"}
    assert old in BACKDOOR
    assert key(BACKDOOR).isdisjoint(key(BACKDOOR.replace(old, new)))


def test_the_template_wording_is_in_the_key(monkeypatch):
    import frpo_bench.attacks.jailbreak_tuning as jailbreak
    recipe = load_recipe("smoke", [f"attacks=[{BACKDOOR}]"])[0]
    before = {s.key for s in build_plan(recipe)[1] if s.kind == "attack"}
    reworded = {**templates(), "backdoor": {**templates()["backdoor"], "request": "{trigger}\n{prompt}"}}
    monkeypatch.setattr(jailbreak, "templates", lambda: reworded)
    after = {s.key for s in build_plan(recipe)[1] if s.kind == "attack"}
    assert before.isdisjoint(after)
