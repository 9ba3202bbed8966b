"""Paired differences between defenses equal their definition: the difference of means, with a paired
bootstrap (matched seeds resampled, then prompts with the same indices for both defenses)."""
import numpy as np
import pytest

from frpo_bench.results.paired import match_seeds, paired_bootstrap, paired_differences


def test_one_seed_two_prompts_by_hand():
    # prompt-level differences (1, 0): a resample of two prompts has mean 1 (p 1/4), 0.5 (p 1/2) or 0 (p 1/4),
    # so the 2.5th percentile is 0 and the 97.5th is 1; the difference itself is 0.5
    diff, low, high = paired_bootstrap([[1.0, 0.0]], [[0.0, 0.0]], samples=4000)
    assert (diff, low, high) == (0.5, 0.0, 1.0)


def test_the_difference_is_the_difference_of_means():
    rng = np.random.default_rng(3)
    a = [list(rng.uniform(0, 1, 20)) for _ in range(3)]
    b = [list(rng.uniform(0, 1, 20)) for _ in range(3)]
    diff, low, high = paired_bootstrap(a, b)
    assert diff == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
    assert low <= diff <= high


def test_pairing_removes_the_noise_both_defenses_share():
    """B is A plus 0.1 on every prompt: unpaired intervals of the two means overlap widely, the paired
    interval of the difference is exactly [-0.1, -0.1]."""
    from frpo_bench.results.leaderboard import seed_bootstrap_ci
    rng = np.random.default_rng(0)
    a = [list(rng.uniform(0, 0.9, 40)) for _ in range(2)]
    b = [[x + 0.1 for x in seed] for seed in a]
    diff, low, high = paired_bootstrap(a, b)
    assert diff == pytest.approx(-0.1) and low == pytest.approx(-0.1) and high == pytest.approx(-0.1)
    a_low, a_high = seed_bootstrap_ci(a)
    b_low, b_high = seed_bootstrap_ci(b)
    assert a_high > b_low and b_high > a_low  # separately, the two means cannot be told apart


def test_seeds_are_matched_by_value_then_by_order():
    assert match_seeds({0: "a0", 1: "a1"}, {1: "b1", 2: "b2"}) == [("a1", "b1")]
    assert match_seeds({0: "a0", 1: "a1"}, {5: "b5", 6: "b6"}) == [("a0", "b5"), ("a1", "b6")]


def record(defense, attack, lr, seed, metric, per_sample):
    return {"recipe": "t", "base": "aligned", "defense": defense, "attack": attack, "attack_lr": lr, "seed": seed,
            "metric": metric, "higher_is_better": True, "per_sample": per_sample}


def test_rows_for_every_pair_of_defenses_and_cell():
    records = [record(d, "benign", "1e-05", s, "harmful_refusal", [float(d == "frpo"), 1.0, 0.0, float(s)])
               for d in ("none", "grpo", "frpo") for s in (0, 1)]
    rows = paired_differences(records)
    assert {(r["defense_a"], r["defense_b"]) for r in rows} == {("none", "grpo"), ("none", "frpo"), ("grpo", "frpo")}
    frpo_vs_grpo = next(r for r in rows if (r["defense_a"], r["defense_b"]) == ("grpo", "frpo"))
    assert frpo_vs_grpo["diff"] == pytest.approx(-0.25) and frpo_vs_grpo["n_seeds"] == 2
    assert frpo_vs_grpo["n_prompts"] == 4 and frpo_vs_grpo["mean_b"] - frpo_vs_grpo["mean_a"] == pytest.approx(0.25)


def test_unmatched_prompt_counts_give_nan_not_a_number_that_pairs_nothing():
    diff, low, high = paired_bootstrap([[1.0, 0.0, 1.0]], [[0.0, 0.0]])
    assert np.isnan(diff) and np.isnan(low) and np.isnan(high)


def test_the_vectorised_two_level_bootstrap_has_the_double_loops_distribution():
    """Two seeds with constant scores 0 and 1: a replicate's mean is 0, 0.5 or 1 with probabilities 1/4, 1/2,
    1/4 (seeds resampled); a seed drawn twice gets independent prompt resamples (checked on one seed of
    prompts 0 and 1: two slots averaging two independent resamples)."""
    from frpo_bench.results.bootstrap import two_level_means
    rng = np.random.default_rng(0)
    means = two_level_means([np.zeros(5), np.ones(5)], rng, samples=20000)
    assert set(np.unique(means)) == {0.0, 0.5, 1.0}
    assert [np.mean(means == v) for v in (0.0, 0.5, 1.0)] == pytest.approx([0.25, 0.5, 0.25], abs=0.01)
    both = two_level_means([np.array([0.0, 1.0]), np.array([0.0, 1.0])], rng, samples=40000)
    # each slot's resample of 2 prompts: mean 0, 0.5, 1 w.p. 1/4, 1/2, 1/4; two independent slots averaged
    assert np.mean(both == 0.0) == pytest.approx(1 / 16, abs=0.005)
    assert np.mean(both == 0.5) == pytest.approx(6 / 16, abs=0.01)
