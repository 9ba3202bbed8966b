"""Runs under hostile settings: a diverging attack is marked and kept out of worst cases, a diverging
alignment stops in one line, and --out never removes files the run did not write."""
import csv
import io

import pytest

from frpo_bench.cli import main

pytestmark = pytest.mark.slow
SMALL = ["--set", "evaluations=[{evaluator: refusal, prompts: {dataset: demo_harmful, split: eval, n: 8}, "
                  "metric: harmful_refusal}]", "--set", "leaderboard.capability_metric=null"]


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_a_diverging_attack_is_marked_and_left_out_of_the_worst_case(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "smoke", "--store", str(tmp_path / "store"), "--out", str(out), *SMALL,
                 "--set", "attacks.1.lrs=[1.0e+30]"])
    err = capsys.readouterr().err
    assert code == 0 and "1 attack cells diverged" in err and "none/benign_full@1e+30" in err
    board = {r["attack"]: r for r in rows(out / "leaderboard.csv")}
    assert board["benign_full"]["notes"].startswith("attack diverged: ") and "non-finite weights" in board["benign_full"]["notes"]
    assert board["harmful_lora"]["notes"] == ""
    (worst,) = [r for r in rows(out / "summary.csv") if r["base"] == "aligned"]
    assert worst["worst_attack"] == "harmful_lora" and worst["n_attack_cells"] == "1"
    assert "benign_full (diverged)" in (out / "leaderboard.md").read_text()


def test_a_diverging_alignment_stops_the_run_in_one_line(tmp_path, capsys):
    code = main(["run", "smoke", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "run"), *SMALL,
                 "--set", "align.lr=1.0e+30"])
    err = capsys.readouterr().err
    assert code == 1 and "Diverged: training diverged" in err and "Traceback" not in err
    assert not list((tmp_path / "store").glob("align/*/COMPLETE"))  # nothing built on it is kept


def test_out_removes_only_what_runs_wrote_there(tmp_path, capsys):
    out = tmp_path / "mine"
    user_files = [out / "inspect" / "my_own.eval", out / "lm_eval" / "my_model" / "results_2020.json",
                  out / "lm_eval" / "raw__none__none" / "samples_mine_2020.jsonl", out / "notes.txt"]
    for path in user_files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's own\n")
    store = str(tmp_path / "store")
    assert main(["run", "smoke", "--store", store, "--out", str(out), *SMALL]) == 0
    first = sorted(p.relative_to(out) for p in out.rglob("*.eval")) + sorted((out / "lm_eval").rglob("results_*"))
    assert main(["run", "smoke", "--store", store, "--out", str(out), *SMALL,
                 "--set", "attacks=[]"]) == 0  # fewer models: the first run's files of the others go
    assert all(path.read_text() == "the user's own\n" for path in user_files)
    evals = sorted(p.name for p in (out / "inspect").glob("*.eval"))
    assert len(evals) == 2 and "my_own.eval" in evals  # the run's new log, the user's; the first run's is gone
    assert not (out / "lm_eval" / "aligned__none__harmful_lora__lr0.001__seed0").exists()
    assert len(first) > len(evals)


def test_runs_whose_kl_used_different_attention_kernels_gate_against_each_other(tmp_path, capsys):
    """The kernel a machine's probe picks changes KL by rounding only: it is recorded, not part of the judge."""
    kl = ("evaluations=[{evaluator: kl_to_start, prompts: {dataset: demo_harmful, split: eval, n: 8}, metric: kl, "
          "options: {attention: ATTENTION}}]")
    boards = []
    for attention in ("sdpa", "grouped"):
        out = tmp_path / attention
        assert main(["run", "smoke", "--store", str(tmp_path / "store"), "--out", str(out), "--set",
                     kl.replace("ATTENTION", attention), "--set", "leaderboard.capability_metric=null"]) == 0
        boards.append(out / "leaderboard.csv")
    capsys.readouterr()
    judges = [{r["judge"] for r in rows(board)} for board in boards]
    assert judges[0] == judges[1] == {"k3 log-prob ratio (float32)"}
    assert main(["check", "--baseline", str(boards[0]), "--current", str(boards[1])]) == 0
    assert "metrics within bounds" in capsys.readouterr().out
