"""Each bad input: one clear message naming field, value and fix; exit 2; nothing in the store."""
import pytest

from frpo_bench.cli import main

CASES = [
    (["--set", "generaton.max_new_tokens=8"], ["generaton", "did you mean 'generation'"]),
    (["--set", "defenses=[{name: frpoo}]"], ["defenses[0].type", "frpoo", "not a registered defense"]),
    (["--set", "attacks.0.type=nonsense"], ["attacks[0].type", "nonsense", "not a registered attack"]),
    (["--set", "evaluations.0.evaluator=strongrej"], ["evaluations[0].evaluator", "strongrej", "not a registered evaluator"]),
    (["--set", "attacks.0.options.data.0.dataset=beavertail"], ["attacks[0].options.data[0].dataset", "beavertail", "did you mean 'beavertails_harmful'"]),
    (["--set", "attacks.0.lrs=[-1e-4]"], ["attacks[0].lrs.0", "-0.0001", "must be positive"]),
    (["--set", "attacks.0.lrs=[fast]"], ["attacks[0].lrs[0]", "fast", "must be a number"]),
    (["--set", "model.id=/no/such/model/dir"], ["model.id", "/no/such/model/dir", "not an existing model directory"]),
    (["--set", "attacks.0.options.data.0.split=validation"], ["attacks[0].options.data[0].split", "validation", "use one of"]),
    (["--set", "attacks.0.lrs=[.inf]"], ["attacks[0].lrs[0]", "inf", "must be a finite number"]),
    (["--set", "align.lr=.nan"], ["align.lr", "nan", "must be a finite number"]),
    (["--set", "generation.temperature=.inf"], ["generation.temperature", "inf"]),
    (["--set", "defenses=[{name: frpo, options: {lam: .inf, harmful_prompts: {dataset: demo_harmful, split: train}, "
      "benign_prompts: {dataset: demo_benign, split: train}}}]"], ["defenses[0].options.lam", "inf", "finite"]),
    (["--set", "attacks.0.eval_steps=[1, 3]"], ["attacks[0].eval_steps.1", "3", "between 0 and the attack's 3 steps"]),
    (["--set", "attacks.0.eval_every=0"], ["attacks[0].eval_every", "0", "positive step count"]),
    (["--set", "trajectory.metrics=[harmfull_refusal]"], ["trajectory.metrics.0", "harmfull_refusal", "not a metric"]),
    (["--stages=attack", "--executor", "ray"], ["--executor", "ray", "does not apply with --stages"]),
    (["--stages=attack", "--training-processes", "2"], ["--training-processes", "2", "does not apply with --stages"]),
    (["--dry-run", "--retries", "5"], ["--retries", "5", "only with --executor ray"]),
    (["--dry-run", "--accelerate-config", "x.yaml"], ["--accelerate-config", "x.yaml", "only with --executor ray"]),
]


@pytest.mark.parametrize("args,expected", CASES, ids=[c[0][1].split("=")[0] for c in CASES])
def test_bad_input_exits_2_before_compute(args, expected, capsys, isolated_cache):
    code = main(["run", "smoke", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "Fix:" in err and err.count("\n") == 1
    for text in expected:
        assert text in err
    assert not isolated_cache.exists() or not any(isolated_cache.rglob("*"))


def test_unknown_recipe(capsys):
    assert main(["plan", "nosuchrecipe"]) == 2
    assert "use one of" in capsys.readouterr().err


def test_absent_offline_dataset(capsys, isolated_cache, tmp_path, monkeypatch):
    empty = tmp_path / "empty_data"
    empty.mkdir()
    monkeypatch.setenv("FRPO_BENCH_DATA", str(empty))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["run", "smoke", "--set", "evaluations.0.prompts={dataset: strongreject, split: all, n: 4}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "dataset strongreject" in err and "not available offline" in err and "FRPO_BENCH_DATA" in err
    assert str(empty) in err  # says where it looked
    assert not isolated_cache.exists() or not any((isolated_cache).glob("base"))


def test_tampered_dataset_is_rejected(capsys, tmp_path, monkeypatch):
    folder = tmp_path / "data" / "strongreject"
    folder.mkdir(parents=True)
    (folder / "strongreject_small_dataset.csv").write_text("category,source,forbidden_prompt\nx,y,z\n")
    monkeypatch.setenv("FRPO_BENCH_DATA", str(tmp_path / "data"))
    code = main(["run", "smoke", "--dry-run", "--set", "evaluations.0.prompts.dataset=strongreject_small",
                 "--set", "evaluations.0.prompts.split=all"])
    assert code == 2
    assert "expected 3051340e3e89" in capsys.readouterr().err
