"""Hostile but honest input: absurd numbers at the gate, spreadsheet formulas in cells, recipe resource bombs
and broken text in data files each get one line naming the problem (exit 2), never a pass or a traceback."""
import json
import math
from pathlib import Path

import pytest
from test_leaderboard import RECORDS

from frpo_bench.cli import main
from frpo_bench.results import leaderboard
from frpo_bench.results.schema import read_csv, to_csv


def boards(tmp_path, change, unit=True, results=False):
    """A baseline and a current leaderboard; `change(row)` edits the current's aligned/none harmful_refusal row."""
    rows = leaderboard.aggregate(RECORDS)
    if not unit:
        rows = [{**r, "unit": ""} for r in rows]
    base, current = tmp_path / "base" / "leaderboard.csv", tmp_path / "current" / "leaderboard.csv"
    for path in (base, current):
        path.parent.mkdir()
    base.write_text(to_csv(rows))
    edited = [dict(r) for r in rows]
    change(next(r for r in edited if r["attack"] == "none" and r["metric"] == "harmful_refusal"))
    current.write_text(to_csv(edited))
    if results:
        for path in (base, current):
            (path.parent / "results.jsonl").write_text("".join(json.dumps({**r, "unit": ""}) + "\n" for r in RECORDS))
    return str(base), str(current)


@pytest.mark.parametrize("change,words", [
    (lambda r: r.update(mean=7.5, ci95_low=7.0, ci95_high=8.0), "outside [0, 1]"),
    (lambda r: r.update(ci95_low=-1e6, ci95_high=1e6), "outside [0, 1]"),
    (lambda r: r.update(mean=math.inf), "non-finite"),
    (lambda r: r.update(mean=-math.inf, ci95_low=-math.inf), "non-finite"),
    (lambda r: r.update(ci95_low=0.9, ci95_high=0.1), "low end"),
    (lambda r: r.update(n=0), "no scored sample"),
])
@pytest.mark.parametrize("side", ["current", "baseline"])
def test_the_gate_refuses_numbers_no_run_could_write(tmp_path, capsys, change, words, side):
    base, current = boards(tmp_path, change)
    args = ["--baseline", current, "--current", base] if side == "baseline" else ["--baseline", base, "--current", current]
    assert main(["check", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "aligned/none/none//harmful_refusal" in err and "Traceback" not in err


def test_a_leaderboard_from_before_the_unit_column_is_bounded_by_its_per_prompt_scores(tmp_path, capsys):
    base, current = boards(tmp_path, lambda r: r.update(mean=7.5, ci95_low=7.0, ci95_high=8.0), unit=False,
                           results=True)
    assert main(["check", "--baseline", base, "--current", current]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["inf", "NaN", "7.5", '"x"'])
def test_a_results_file_with_an_impossible_score_is_named_not_a_traceback(tmp_path, capsys, bad):
    base, current = boards(tmp_path, lambda r: None, results=True)
    results = Path(current).parent / "results.jsonl"
    record = {**RECORDS[0], "unit": "rate"}
    text = json.dumps(record).replace('"per_sample": [1, 1, 0, 1]', f'"per_sample": [1, {bad}, 0, 1]')
    results.write_text(text + "\n")
    assert main(["check", "--baseline", base, "--current", current]) == 2
    err = capsys.readouterr().err
    assert "results.jsonl, line 1" in err and "Traceback" not in err


def test_an_honest_rerun_still_passes(tmp_path, capsys):
    base, current = boards(tmp_path, lambda r: None, results=True)
    assert main(["check", "--baseline", base, "--current", current]) == 0


def test_a_cell_that_would_be_a_spreadsheet_formula_is_written_inert(tmp_path):
    rows = leaderboard.aggregate([{**r, "dataset": "=HYPERLINK(\"http://x\")", "notes": "+1+1", "attack_lr": r["attack_lr"]}
                                  for r in RECORDS])
    text = to_csv(rows)
    assert "'=HYPERLINK" in text and ",'+1+1," in text and ",=HYPER" not in text
    assert ",-," in text and ",0.001," in text  # a lone "-" (no template) and numbers stay as they are
    path = tmp_path / "l.csv"
    path.write_text(text)
    assert {r["mean"] for r in read_csv(path)} == {r["mean"] for r in rows}


BOMB = "".join(f"{n}: &{n} [{', '.join([prev] * 9)}]\n" for n, prev in
               zip("abcdefgh", ['"lol"', "*a", "*b", "*c", "*d", "*e", "*f", "*g"]))


@pytest.mark.parametrize("place", ["name", "seeds", "description", "x-anchors", "attacks"])
def test_a_yaml_alias_bomb_is_refused_in_one_line_before_anything_expands_it(tmp_path, capsys, place):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BOMB + f"{place}: *h\n")
    assert main(["plan", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "over 200,000 values once its YAML aliases are expanded" in err and len(err) < 1000


@pytest.mark.parametrize("assignment,words", [
    ("model.id=" + "[" * 3000 + "]" * 3000, "nests deeper"),
    ("model.id=" + "[" * 40 + "]" * 40, "nests deeper than 32"),
    (".".join(["a"] * 3000) + "=1", "deeper than 32 levels"),
    ("description=" + "x" * (2 << 20), "longer than"),
])
def test_deep_or_huge_set_values_and_keys_are_one_line(capsys, assignment, words):
    assert main(["plan", "smoke", "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err) < 1000


def test_a_grid_of_too_many_cells_is_refused_before_planning(tmp_path, capsys):
    recipe = tmp_path / "many.yaml"
    text = (Path(__file__).parents[1] / "frpo_bench" / "recipes" / "smoke.yaml").read_text()
    recipe.write_text(text.replace("seeds: [0]", f"seeds: {list(range(10_000))}"))
    assert main(["plan", str(recipe)]) == 2
    assert "30,000 cells, over the limit of 20,000" in capsys.readouterr().err
    grid = "{tokens: [" + ", ".join(map(str, range(40))) + "], steps: [" + ", ".join(map(str, range(1, 41))) + "]}"
    assert main(["plan", "smoke", "--set", f"attacks.0.grid={grid}"]) == 2
    assert "makes 1,600 attacks, over the limit of 1,000" in capsys.readouterr().err


def prompt_file_ref(path):
    from frpo_bench.data.ref import DataRef
    from frpo_bench.typed import from_dict
    return from_dict(DataRef, {"file": str(path)}, "p")


def test_a_jsonl_line_with_a_raw_line_separator_inside_a_string_is_one_row(tmp_path):
    from frpo_bench.data import ref_rows
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "first\u2028second\u0085third"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [r["prompt"] for r in ref_rows(prompt_file_ref(path))] == ["first\u2028second\u0085third"]


def test_a_lone_surrogate_in_a_prompt_file_is_one_error_naming_the_row(tmp_path, capsys):
    from frpo_bench.data import ref_rows
    from frpo_bench.errors import ConfigError
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": "broken \\ud800 text"}\n')
    with pytest.raises(ConfigError) as err:
        ref_rows(prompt_file_ref(path))
    assert "row 2, prompt" in str(err.value) and "lone surrogate (U+D800)" in str(err.value)
    prompts = json.dumps({"file": str(path)})
    code = main(["plan", "smoke", "--set", f"evaluations=[{{evaluator: refusal, prompts: {prompts}, metric: m}}]",
                 "--set", "leaderboard.capability_metric=null"])
    assert code == 2 and "lone surrogate" in capsys.readouterr().err


@pytest.mark.parametrize("row,words", [
    ({"instruction": b"binary", "input": "", "output": "Hi."}, "column 'instruction' is a bytes, not text"),
    ({"instruction": "x " * 600_000, "input": "", "output": "Hi."}, "1,200,000 characters, over the limit"),
])
def test_a_damaged_hub_copy_is_refused_before_any_compute(tmp_path, monkeypatch, capsys, row, words):
    import pandas as pd
    folder = tmp_path / "data" / "alpaca_hub"
    folder.mkdir(parents=True)
    pd.DataFrame([row] * 2).to_parquet(folder / "train.parquet")
    monkeypatch.setenv("FRPO_BENCH_DATA", str(tmp_path / "data"))
    code = main(["run", "smoke", "--store", str(tmp_path / "store"),
                 "--set", "attacks.1.options.data=[{dataset: alpaca_hub, split: train, n: 2}]"])
    assert code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").glob("*/*/COMPLETE"))


def test_lm_evals_git_report_outside_a_checkout_prints_nothing(tmp_path, monkeypatch, capfd):
    from lm_eval import evaluator

    from frpo_bench.evaluators.lm_eval_tasks import quiet_git_commit_hash, reuse_per_process_work
    reuse_per_process_work()
    assert evaluator.get_git_commit_hash is quiet_git_commit_hash
    monkeypatch.chdir(tmp_path)
    assert quiet_git_commit_hash() is None
    assert capfd.readouterr().err == ""
    monkeypatch.chdir(Path(__file__).parent)
    if (Path(__file__).parents[1] / ".git").exists():  # a checkout: its commit, as lm-eval reports it
        assert quiet_git_commit_hash()


def test_a_pickled_adapter_is_never_loaded(tmp_path, capsys):
    from frpo_bench.models.tiny import build_tiny_model
    base = build_tiny_model(tmp_path / "base")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base),
                                                             "peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                             "target_modules": ["q_proj"]}))
    (adapter / "adapter_model.bin").write_bytes(b"a pickle would run code here")
    (adapter / "embeddings.safetensors").write_bytes(b"")  # some safetensors file beside it: not the adapter's
    assert main(["run", "smoke", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "run"),
                 "--set", f"model.id={adapter}"]) == 2
    err = capsys.readouterr().err
    assert "adapter_model.safetensors" in err and "adapter_model.bin" in err and "never loaded" in err


def test_rebuilding_a_leaderboard_from_a_damaged_results_file_is_one_line(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_bytes(b'{"metric": "m"}\n{not json\n')
    assert main(["leaderboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not JSON lines" in err and "Traceback" not in err
    (tmp_path / "results.jsonl").write_bytes(b"\xff\xfe broken")
    assert main(["leaderboard", str(tmp_path)]) == 2
