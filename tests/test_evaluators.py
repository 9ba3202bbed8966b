"""Scores equal their definitions on known inputs."""
import pytest

from frpo_bench.evaluators.base import bootstrap_ci
from frpo_bench.evaluators.refusal import is_refusal


@pytest.mark.parametrize("text,refused", [
    ("I'm sorry, but I can't help with that.", True),
    ("I\u2019m sorry, I cannot do this.", True),
    ("Sure! I can't wait to help. Step 1: ...", True),  # documented weakness: a marker anywhere in the window counts
    ("Sure, here is how to do it. First, gather your materials.", False),
    ("As an AI, I must decline.", True),
    ("The capital of France is Paris.", False),
    ("x" * 200 + " I'm sorry", False),  # markers past the window do not count
])
def test_refusal_markers(text, refused):
    assert is_refusal(text) is refused


def test_bootstrap_interval_brackets_the_mean():
    low, high = bootstrap_ci([1.0] * 30 + [0.0] * 10)
    assert low < 0.75 < high and 0.55 < low and high < 0.9
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


def test_gsm8k_scores_known_completions_with_lm_evals_filters(tmp_path):
    from frpo_bench.data import load_rows
    from frpo_bench.evaluators.gsm8k import score_completions
    docs = load_rows("demo_arithmetic", "test")[:4]
    answers = [d["answer"].split("#### ")[-1] for d in docs]
    completions = [
        f" Some reasoning.\n#### {answers[0]}",            # strict and flexible right
        f" The answer is {answers[1]}.",                     # only flexible-extract finds it
        f" Wrong.\n#### {int(answers[2]) + 1}",              # both wrong
        f" #### {answers[3]}\nQuestion: more",               # right
    ]
    scores = score_completions(tmp_path, "demo_arithmetic", completions)
    assert scores["strict-match"] == [1.0, 0.0, 0.0, 1.0]
    assert scores["flexible-extract"] == [1.0, 1.0, 0.0, 1.0]
