"""The lm-eval-shaped files of a run directory: one folder per model, rewritten in place."""
from frpo_bench.results import lm_eval_format


def _record(step):
    return {"base": "aligned", "defense": "none", "attack": "harmful_lora", "attack_lr": "0.001", "seed": 0,
            "step": step, "intermediate": True, "metric": "harmful_refusal", "score_key": f"s{step}", "main": True,
            "higher_is_better": True, "recipe": "r", "model": "m", "value": 1.0, "n": 1, "per_sample": [1.0],
            "evaluator": "refusal (v1)", "judge": "regex", "template": "-", "dataset": "demo_harmful", "split": "eval",
            "dataset_revision": "v1"}


def test_files_of_models_no_longer_in_the_run_are_removed(tmp_path):
    def run(step, stamp):
        lm_eval_format.write(tmp_path, [_record(step)], {f"s{step}": [{"prompt": "p", "response": "r", "score": 1.0}]},
                             {}, {"timestamp": stamp, "versions": {}, "date": 0.0})
    run(3, "2026-01-01T00-00-00.000000")
    run(5, "2026-01-02T00-00-00.000000")
    assert sorted(p.name for p in (tmp_path / "lm_eval").iterdir()) == ["aligned__none__harmful_lora__lr0.001__seed0__step5"]
    assert sorted(p.name for p in (tmp_path / "lm_eval").glob("*/*")) == [
        "results_2026-01-02T00-00-00.000000.json", "samples_harmful_refusal_2026-01-02T00-00-00.000000.jsonl"]
