"""EvalPlus (MBPP+ / HumanEval+) as the FRPO reference scores code: EvalPlus's own loader, prompt, sanitizer and
checker on a small release file written here in EvalPlus's format (the release itself is downloaded by EvalPlus and
is not on this machine)."""
import json

import pytest

from frpo_bench.data import load_rows

# three MBPP+-shaped tasks; task numbers EvalPlus's input deserialisation leaves alone
TASKS = [
    {"task_id": "Mbpp/901", "entry_point": "add_nums", "prompt": '"""\nWrite a function to add two numbers.\n'
     'assert add_nums(1, 2) == 3\n"""\n', "canonical_solution": "def add_nums(a, b):\n    return a + b\n",
     "base_input": [[1, 2], [3, 4]], "plus_input": [[10 ** 6, -5], [0, 0]], "atol": 0,
     "contract": "", "assertion": ""},
    {"task_id": "Mbpp/902", "entry_point": "is_even", "prompt": '"""\nWrite a function to check whether a number is '
     'even.\nassert is_even(2) == True\n"""\n', "canonical_solution": "def is_even(n):\n    return n % 2 == 0\n",
     "base_input": [[2], [3]], "plus_input": [[-4], [0], [7]], "atol": 0, "contract": "", "assertion": ""},
    {"task_id": "Mbpp/903", "entry_point": "halve", "prompt": '"""\nWrite a function to halve a number.\n'
     'assert halve(4) == 2.0\n"""\n', "canonical_solution": "def halve(x):\n    return x / 2\n",
     "base_input": [[4], [3]], "plus_input": [[1e6], [-1]], "atol": 1e-6, "contract": "", "assertion": ""},
]


@pytest.fixture
def mbpp_copy(tmp_path, monkeypatch):
    """A local release file where the loader looks first ($FRPO_BENCH_DATA/evalplus/MbppPlus-v0.2.0.jsonl)."""
    folder = tmp_path / "data" / "evalplus"
    folder.mkdir(parents=True)
    (folder / "MbppPlus-v0.2.0.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TASKS))
    monkeypatch.setenv("FRPO_BENCH_DATA", str(tmp_path / "data"))
    return folder


def options(**fields):
    from frpo_bench.evaluators.evalplus_code import Options
    from frpo_bench.typed import from_dict
    return from_dict(Options, {"confirm_run_unsafe_code": True, "parallel": 2, **fields}, "evaluators.evalplus")


def test_the_release_file_is_read_by_evalplus_and_its_copy_enters_the_key(mbpp_copy):
    from frpo_bench.data import content_of
    from frpo_bench.data.evalplus_release import problems
    from frpo_bench.data.ref import DataRef
    rows = load_rows("mbpp_plus", "test")
    assert [r["id"] for r in rows] == ["Mbpp/901", "Mbpp/902", "Mbpp/903"] and rows[0]["entry_point"] == "add_nums"
    assert problems("mbpp_plus")["Mbpp/902"]["plus_input"] == [[-4], [0], [7]]
    before = content_of(DataRef(dataset="mbpp_plus", split="test"))
    assert before.startswith("evalplus:MbppPlus@v0.2.0:local:")
    (mbpp_copy / "MbppPlus-v0.2.0.jsonl").write_text(json.dumps(TASKS[0]) + "\n")
    assert content_of(DataRef(dataset="mbpp_plus", split="test")) != before  # other bytes, other keys


def test_evalplus_checks_known_solutions_against_base_and_extra_tests(mbpp_copy, tmp_path):
    """The real checker: right code passes both; code right on the base inputs only fails the extra ones; code
    that does not run, or loops, fails."""
    from frpo_bench.data.evalplus_release import problems
    from frpo_bench.evaluators.evalplus_code import check_solutions
    every = problems("mbpp_plus")
    solutions = {"Mbpp/901": "def add_nums(a, b):\n    return a + b\n",
                 "Mbpp/902": "def is_even(n):\n    return n in (2,)\n",  # right on 2 and 3, wrong on -4, 0
                 "Mbpp/903": "def halve(x):\n    while True:\n        pass\n"}
    verdicts = check_solutions("mbpp", every, solutions, options(), tmp_path)
    assert verdicts["Mbpp/901"] == {"base": "pass", "plus": "pass"}
    assert verdicts["Mbpp/902"]["base"] == "pass" and verdicts["Mbpp/902"]["plus"] != "pass"
    assert verdicts["Mbpp/903"]["base"] != "pass"
    broken = check_solutions("mbpp", every, {"Mbpp/901": "def add_nums(a, b) return a + b\n"}, options(), tmp_path / "b")
    assert broken["Mbpp/901"]["base"] != "pass"
    assert (tmp_path / "evalplus_groundtruth.pkl").is_file()  # ground truth kept in the stage's folder


def test_answers_are_cut_and_sanitised_as_evalplus_does():
    from evalplus.sanitize import sanitize

    from frpo_bench.evaluators.evalplus_code import chat_prefixes, cut_at_stop, stop_strings
    prefixes = chat_prefixes()
    assert prefixes["instruction_prefix"].startswith("Please provide a self-contained Python script")
    assert prefixes["response_prefix"].startswith("Below is a Python script")
    stops = stop_strings()
    answer = cut_at_stop("def f(x):\n\treturn x\n```\nThat is all.\nif __name__ == '__main__':", stops)
    assert answer == "def f(x):\n    return x"
    code = sanitize("import math\n\ndef f(x):\n    return math.floor(x)\n\nprint(f(2))\n", entrypoint="f")
    assert "def f(x)" in code and "import math" in code and "print(" not in code


def test_evalplus_must_be_confirmed_before_it_runs_model_code():
    from frpo_bench.errors import ConfigError
    with pytest.raises(ConfigError, match="confirm_run_unsafe_code"):
        options(confirm_run_unsafe_code=False)


def test_the_evaluator_prompts_generates_and_scores_every_task(mbpp_copy, tiny_model_dir, tmp_path):
    """End to end on the random-weight model: EvalPlus's chat prompt (the task inside its code block, the answer
    opened with its response prefix), greedy answers, the checker's verdicts per task in the records."""
    from evalplus.provider.utility import make_raw_chat_prompt

    from frpo_bench.evaluators import evalplus_code
    from frpo_bench.evaluators.base import ScoreInputs
    from frpo_bench.models import ModelRef
    from frpo_bench.models.loading import load_tokenizer
    seen = []
    real = evalplus_code.generate_answers
    rows = load_rows("mbpp_plus", "test")
    inputs = ScoreInputs(rows, [0, 1, 2], None, ModelRef(str(tiny_model_dir)), False, "mbpp_plus", "test", {}, tmp_path)
    try:
        evalplus_code.generate_answers = lambda ref, prompts, opts, report: seen.extend(prompts) or real(ref, prompts, opts, report)
        result = evalplus_code.EvalPlusEvaluator().score(inputs, options(max_new_tokens=8, dtype="float32"))
    finally:
        evalplus_code.generate_answers = real
    prefixes = evalplus_code.chat_prefixes()
    tokenizer = load_tokenizer(ModelRef(str(tiny_model_dir)))
    assert seen[1] == make_raw_chat_prompt(TASKS[1]["prompt"].strip() + "\n", prefixes["instruction_prefix"],
                                           prefixes["response_prefix"], tokenizer)
    assert seen[1].rstrip().endswith("```python") and "is_even(2)" in seen[1]
    assert [r["id"] for r in result.records] == ["Mbpp/901", "Mbpp/902", "Mbpp/903"]
    assert all(r["base_status"] in ("pass", "fail", "timeout") for r in result.records)
    assert result.metrics[0].per_sample == [float(r["base_status"] == r["plus_status"] == "pass") for r in result.records]
    assert result.meta["release_file_sha256"] and "evalplus 0.3.1" in result.meta["judge"]
