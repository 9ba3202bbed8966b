"""Judge agreement and output checks against their definitions, on constructed verdicts and texts."""
import math

import pytest

from frpo_bench.results import agreement


def test_kappa_and_agreement_equal_their_definitions():
    # 10 completions: judge A says unsafe on 0-5, judge B on 3-8
    a = [i < 6 for i in range(10)]
    b = [3 <= i < 9 for i in range(10)]
    # observed: agree on 3,4,5 (both unsafe) and 9 (both safe) -> 4/10
    assert agreement.agreement_rate(a, b) == pytest.approx(0.4)
    # expected: 0.6*0.6 + 0.4*0.4 = 0.52; kappa = (0.4 - 0.52) / 0.48 = -0.25
    assert agreement.cohen_kappa(a, b) == pytest.approx(-0.25)
    assert agreement.cohen_kappa(a, a) == pytest.approx(1.0)
    assert math.isnan(agreement.cohen_kappa([True] * 5, [True] * 5))  # p_e = 1: undefined, not 1 or 0


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    a = [i % 3 == 0 for i in range(60)]
    b = [i % 3 == 0 or i % 7 == 0 for i in range(60)]
    low, high = agreement.bootstrap_pairs(a, b, agreement.cohen_kappas, seed=0)
    assert low <= agreement.cohen_kappa(a, b) <= high < 1.0
    assert (low, high) == agreement.bootstrap_pairs(a, b, agreement.cohen_kappas, seed=0)


def test_vectorised_statistics_equal_the_scalar_definitions_row_by_row():
    import numpy as np
    rng = np.random.default_rng(1)
    a, b = rng.random((50, 12)) < 0.4, rng.random((50, 12)) < 0.6
    a[0], b[0] = True, True  # p_e = 1: nan, as the scalar kappa says
    rates, kappas = agreement.agreement_rates(a, b), agreement.cohen_kappas(a, b)
    for row in range(50):
        assert rates[row] == pytest.approx(agreement.agreement_rate(list(a[row]), list(b[row])))
        scalar = agreement.cohen_kappa(list(a[row]), list(b[row]))
        assert (math.isnan(scalar) and math.isnan(kappas[row])) or kappas[row] == pytest.approx(scalar)


def _record(metric, key, higher_is_better, **extra):
    return {"base": "aligned", "defense": "none", "attack": "harmful_lora", "attack_lr": "0.001", "seed": 0, "step": 10,
            "metric": metric, "score_key": key, "completions_key": "gen1", "higher_is_better": higher_is_better,
            "harmful": True, "main": True, "unit": "rate", "intermediate": False, "dataset": "demo_harmful", **extra}


def test_judges_are_oriented_to_unsafe_before_comparing():
    texts = ["Sure, here is how", "I'm sorry, I can't", "word word word word word word word word", ""]
    refused = [0.0, 1.0, 0.0, 0.0]  # a refusal regex: higher (refused) is safer
    complied = [1.0, 0.0, 0.0, 0.0]  # a compliance judge: higher is less safe; gibberish is not compliance
    records = [_record("harmful_refusal", "s1", True), _record("harmful_compliance", "s2", False)]
    samples = {"s1": [{"prompt": "p", "response": t, "score": s, "refused": bool(s)} for t, s in zip(texts, refused)],
               "s2": [{"prompt": "p", "response": t, "score": s} for t, s in zip(texts, complied)]}
    rows = agreement.agreement_rows(records, samples)
    assert {(r["judge_a"], r["judge_b"]) for r in rows} == {("harmful_compliance", "harmful_refusal")}
    pooled = next(r for r in rows if r["base"] == agreement.ALL_CELLS)
    # unsafe by compliance: [T, F, F, F]; by refusal: [T, F, T, T] -> agree on 2 of 4
    assert pooled["n"] == 4 and pooled["agreement"] == pytest.approx(0.5)
    assert pooled["unsafe_rate_a"] == pytest.approx(0.25) and pooled["unsafe_rate_b"] == pytest.approx(0.75)
    top = agreement.top_disagreements(records, samples)
    assert [t["response"] for t in top] == texts[2:]  # the degenerate and the empty answer
    assert '"refused": false' in top[0]["raw_b"]


def test_unparsed_verdicts_and_other_judges_are_left_out():
    records = [_record("harmful_refusal", "s1", True), _record("asr", "s2", False),
               _record("kl", "s3", False, unit="nats"), _record("benign", "s4", True, harmful=False)]
    samples = {"s1": [{"score": 1.0}, {"score": 0.0}], "s2": [{"score": None}, {"score": 1.0}],
               "s3": [{"score": 3.0}, {"score": 2.0}], "s4": [{"score": 1.0}, {"score": 1.0}]}
    rows = agreement.agreement_rows(records, samples)
    assert {(r["judge_a"], r["judge_b"]) for r in rows} == {("asr", "harmful_refusal")}
    assert all(r["n"] == 1 and r["agreement"] == 1.0 for r in rows)


def test_output_flags():
    assert agreement.output_flags("")["empty"]
    assert agreement.output_flags("go go go go go go go go go")["repetitive"]
    assert agreement.output_flags("#### 12 = 3 * 4 ((( ))) ## ~~ 99")["non_language"]
    assert not agreement.output_flags("9 + 36 = 45.")["non_language"]  # arithmetic is language
    clean = agreement.output_flags("Here is a short, ordinary answer to the question.")
    assert not any(clean.values())


def test_output_checks_count_per_cell_with_seed_interval():
    records = [_record("harmful_refusal", "s1", True, seed=0, completions_key="g0"),
               _record("harmful_refusal", "s2", True, seed=1, completions_key="g1")]
    samples = {"s1": [{"response": ""}, {"response": "A fine answer here."}],
               "s2": [{"response": "ok ok ok ok ok ok ok ok"}, {"response": "Another fine answer."}]}
    (row,) = agreement.output_check_rows(records, samples)
    assert (row["n_seeds"], row["n"], row["empty"], row["repetitive"], row["degenerate"]) == (2, 4, 1, 1, 2)
    assert row["degenerate_rate"] == 0.5 and row["ci95_low"] <= 0.5 <= row["ci95_high"]


def test_output_checks_keep_prompt_selections_apart():
    """A 100-prompt and a 32-prompt set of the same cell (two evaluations drawing different n) are two rows, not two seeds."""
    records = [_record("harmful_refusal", "s1", True, completions_key="g100"),
               _record("kl", "s2", False, unit="nats", completions_key="g32")]
    samples = {"s1": [{"response": "A fine answer here."}] * 100, "s2": [{"response": ""}] * 32}
    rows = agreement.output_check_rows(records, samples)
    assert sorted((r["n_seeds"], r["n"], r["empty"]) for r in rows) == [(1, 32, 32), (1, 100, 0)]

