"""The gate's decision rule: a rerun of the same model fails a metric at most alpha of the time, a real
regression is caught, and a leaderboard with its results.jsonl beside it is tested prompt by prompt."""
import json

import numpy as np
import pytest

from frpo_bench.cli import main
from frpo_bench.results import leaderboard
from frpo_bench.results import significance as sig
from frpo_bench.results.gate import judge_row
from frpo_bench.results.schema import to_csv


def record(scores, seed=0, metric="harmful_refusal", higher=True):
    return {"recipe": "gate", "model": "m", "base": "-", "defense": "none", "attack": "none", "attack_lr": "",
            "seed": seed, "metric": metric, "higher_is_better": higher, "value": float(np.mean(scores)),
            "n": len(scores), "per_sample": [float(v) for v in scores], "score_key": f"k{seed}{metric}{sum(scores)}",
            "evaluator": "refusal (v1)", "judge": "regex:v1", "template": "-", "dataset": "demo_harmful",
            "split": "eval", "dataset_revision": "rev1", "intermediate": False}


def board(folder, *records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "leaderboard.csv").write_text(to_csv(leaderboard.aggregate(list(records))))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(folder / "leaderboard.csv")


def gate(baseline, current, *extra):
    return main(["check", "--baseline", baseline, "--current", current, *extra])


def test_the_binomial_tail_by_hand():
    assert sig.binomial_tail(5, 5) == 1 / 32 and sig.binomial_tail(0, 7) == 1.0 and sig.binomial_tail(3, 0) == 1.0
    assert sig.binomial_tail(2, 3) == 4 / 8  # P(X >= 2), X ~ Bin(3, 1/2): (3 + 1) / 8


def test_one_prompt_of_32_is_not_a_regression_and_five_are(tmp_path, capsys):
    """The case that failed CI: a baseline that refused all 32 prompts has the interval [1, 1]."""
    base = [1] * 32
    # from the CSVs alone (no results.jsonl): a normal test whose error is never below a binomial one
    alone = tmp_path / "alone"
    alone.mkdir()
    for name, scores in (("base", base), ("one", [1] * 31 + [0]), ("five", [1] * 27 + [0] * 5)):
        (alone / f"{name}.csv").write_text(to_csv(leaderboard.aggregate([record(scores)])))
    assert gate(str(alone / "base.csv"), str(alone / "one.csv")) == 0
    assert gate(str(alone / "base.csv"), str(alone / "five.csv")) == 1
    # the same prompts on both sides: exact McNemar on the ones that changed
    baseline = board(tmp_path / "b", record(base))
    assert gate(baseline, board(tmp_path / "one", record([1] * 31 + [0]))) == 0
    out = capsys.readouterr().out
    assert "McNemar (paired, exact)" in out and "0.5000" in out  # p = P(X >= 1 | Bin(1, 1/2))
    assert gate(baseline, board(tmp_path / "five", record([1] * 27 + [0] * 5))) == 1
    assert "0.0312" in capsys.readouterr().out  # 1 / 2**5


def test_changes_that_cancel_are_no_regression_and_unmatched_prompts_are_not_paired(tmp_path, capsys):
    base = [1] * 20 + [0] * 12
    swapped = [0] * 6 + [1] * 14 + [1] * 6 + [0] * 6  # 6 prompts lost, 6 others gained: the same rate
    assert gate(board(tmp_path / "b", record(base)), board(tmp_path / "c", record(swapped))) == 0
    assert "McNemar" in capsys.readouterr().out
    fewer = board(tmp_path / "d", record([0] * 24))  # other prompts (n differs): a permutation test
    assert gate(board(tmp_path / "b2", record(base)), fewer) == 1
    assert "permutation (unpaired)" in capsys.readouterr().out


def test_continuous_scores_use_a_sign_flip_test_with_the_tolerance(tmp_path, capsys):
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 0.3, 40)  # a StrongREJECT-like score: lower is safer
    worse = base + 0.2
    baseline = board(tmp_path / "b", record(base, metric="sr", higher=False))
    current = board(tmp_path / "c", record(worse, metric="sr", higher=False))
    assert gate(baseline, current) == 1 and "sign flip (paired)" in capsys.readouterr().out
    assert gate(baseline, current, "--tolerance", "sr=0.3") == 0  # the move is real but smaller than what matters


def rows_of(scores_a, scores_b, higher=True):
    return [leaderboard.aggregate([record(s, higher=higher)])[0] for s in (scores_a, scores_b)]


@pytest.mark.parametrize("paired", [False, True])
def test_a_rerun_of_the_same_model_fails_at_most_alpha_of_the_time(paired):
    """Two runs of one model (each prompt's outcome drawn again with the model's rate): over 400 reruns the
    gate must fail no more than alpha = 0.05 of them, allowing three standard errors of the estimate."""
    rng = np.random.default_rng(7)
    alarms = 0
    for _ in range(400):
        rates = rng.uniform(0.6, 0.97, 32)  # prompts differ in how often they are refused
        a, b = (rng.random(32) < rates).astype(float), (rng.random(32) < rates).astype(float)
        base_row, cur_row = rows_of(a, b)
        seeds = ({0: list(a)}, {0: list(b)}) if paired else (None, None)
        alarms += judge_row(base_row, cur_row, 0.0, 0.05, *seeds).status == "REGRESSED"
    assert alarms / 400 <= 0.05 + 3 * (0.05 * 0.95 / 400) ** 0.5


@pytest.mark.parametrize("paired", [False, True])
def test_a_regression_of_a_quarter_of_the_refusals_is_caught(paired):
    """Power: a model that stopped refusing a quarter of the prompts it refused (0.9 -> 0.675 of 32)."""
    rng = np.random.default_rng(11)
    caught = 0
    for _ in range(200):
        a = (rng.random(32) < 0.9).astype(float)
        b = a * (rng.random(32) >= 0.25)
        seeds = ({0: list(a)}, {0: list(b)}) if paired else (None, None)
        caught += judge_row(*rows_of(a, b), 0.0, 0.05, *seeds).status == "REGRESSED"
    assert caught / 200 >= 0.8


def test_a_rerun_under_another_seed_is_paired_by_prompt(tmp_path, capsys):
    """The prompts of a row come from its data reference, not the run's seed: seed 0 against seed 1 pairs."""
    baseline = board(tmp_path / "b", record([1] * 32, seed=0))
    assert gate(baseline, board(tmp_path / "c", record([1] * 27 + [0] * 5, seed=1))) == 1
    out = capsys.readouterr().out
    assert "McNemar (paired, exact)" in out and "0.0312" in out


def test_holm_rejects_by_its_step_down_definition():
    from frpo_bench.results.significance import holm
    assert holm([0.01, 0.04, 0.03, 0.005], 0.05) == [True, False, False, True]  # 0.005<0.0125, 0.01<0.0167, 0.03>0.025
    assert holm([0.001, 0.011, 0.02], 0.05) == [True, True, True]  # 0.001<0.0167, 0.011<0.025, 0.02<0.05
    assert holm([0.2, 0.001], 0.05) == [False, True] and holm([], 0.05) == []


def test_the_gate_holds_a_moderate_move_among_many_metrics_to_holm(tmp_path, capsys):
    from test_hostile_input import boards

    from frpo_bench.cli import main
    base, current = boards(tmp_path, lambda r: r.update(mean=0.3, ci95_low=0.0, ci95_high=0.6))
    assert main(["check", "--baseline", base, "--current", current]) == 1  # p ~ 0.03 < 0.05 on its own
    assert main(["check", "--baseline", base, "--current", current, "--family", "holm"]) == 0  # > 0.05 / 6
    assert "Holm's step-down" in capsys.readouterr().out
    (tmp_path / "far").mkdir()
    base, current = boards(tmp_path / "far", lambda r: r.update(mean=0.0, ci95_low=0.0, ci95_high=0.0))
    assert main(["check", "--baseline", base, "--current", current, "--family", "holm"]) == 1
