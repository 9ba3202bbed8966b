"""Bad input fails before compute with one message (exit 2, field, value, fix, nothing stored); unsafe
names, empty grids and unloadable inputs are refused in preflight; the gate never passes on nothing."""
import json

import pytest

from frpo_bench.cli import main


def run_fails_cleanly(capsys, store, *argv, expect=()):
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Fix:" in err and err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in expect:
        assert text in err, err
    assert not store.exists() or not any(store.rglob("COMPLETE")), "a stage was built before the error"
    return err


# --- class 1: recipes that do not parse -----------------------------------------------------------

@pytest.mark.parametrize("content,expect", [
    ("name: x\nseeds: [0\n", ["recipe", "not valid YAML", "line"]),
    ("", ["recipe", "is empty"]),
    ("   \n# only a comment\n", ["recipe", "is empty"]),
    ("- name: x\n- seeds: [0]\n", ["recipe", "must be a mapping"]),
    ("just a sentence", ["recipe", "must be a mapping"]),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", ["recipe", "not a text file"]),
    ("name: x\nmodel: pasted\nseeds: [0]\nmodel: {id: tiny-llama}\n",
     ["recipe", "not valid YAML", "key 'model' is given twice (first at line 2)", "line 4"]),
], ids=["syntax", "empty", "comment-only", "list", "scalar", "binary", "duplicate-key"])
def test_a_recipe_file_that_does_not_parse(content, expect, tmp_path, capsys, isolated_cache):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for command in (["run", str(path)], ["plan", str(path)], ["run", str(path), "--dry-run"]):
        run_fails_cleanly(capsys, isolated_cache, *command, expect=expect)


@pytest.mark.parametrize("assignment,expect", [
    ("seeds=[0", ["--set", "seeds=[0", "not valid YAML"]),
    ("generation: {", ["--set", "must look like key.path=value"]),
    ("=3", ["--set", "must look like key.path=value"]),
    ("seeds.x=1", ["--set seeds.x"]),
], ids=["unclosed", "no-equals", "no-key", "index-into-scalar"])
def test_an_override_that_does_not_parse(assignment, expect, capsys, isolated_cache):
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", assignment, expect=expect)


def test_a_recipe_without_defenses_gets_the_undefended_model(tmp_path, capsys):
    from frpo_bench.config import load_recipe
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nmodel: {id: tiny-llama}\nevaluations:\n"
                    "  - {evaluator: refusal, prompts: {dataset: demo_harmful, split: eval, n: 4}}\n")
    recipe, _ = load_recipe(str(path))
    assert [(d.name, d.type) for d in recipe.defenses] == [("none", "none")]
    assert main(["plan", str(path)]) == 0


# --- class 2: numbers that are not finite ---------------------------------------------------------

@pytest.mark.parametrize("override,field", [
    ("attacks.0.lrs=[.inf]", "attacks[0].lrs"),
    ("align.lr=.inf", "align.lr"),
    ("align.weight_decay=.nan", "align.weight_decay"),
    ("generation.top_p=.nan", "generation.top_p"),
    ("attacks.0.options.max_grad_norm=-.inf", "attacks[0].options.max_grad_norm"),
    ("leaderboard.retention=.inf", "leaderboard.retention"),
    ("defenses=[{name: frpo, options: {lam: .inf, harmful_prompts: {dataset: demo_harmful, split: train}, "
     "benign_prompts: {dataset: demo_benign, split: train}}}]", "defenses[0].options.lam"),
    ("defenses=[{name: grpo, options: {beta: .nan, harmful_prompts: {dataset: demo_harmful, split: train}, "
     "benign_prompts: {dataset: demo_benign, split: train}}}]", "defenses[0].options.beta"),
], ids=["lrs", "align-lr", "weight-decay", "top-p", "grad-norm", "retention", "frpo-lam", "grpo-beta"])
def test_non_finite_numbers_are_refused(override, field, capsys, isolated_cache):
    for command in (["run", "smoke", "--set", override], ["run", "smoke", "--dry-run", "--set", override]):
        run_fails_cleanly(capsys, isolated_cache, *command, expect=[field])


# --- class 3 and 4: what preflight can know before compute ---------------------------------------

def test_out_that_is_a_file_or_not_creatable(tmp_path, capsys, isolated_cache):
    a_file = tmp_path / "leaderboard.csv"
    a_file.write_text("x")
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--out", str(a_file), expect=["--out", "is a file"])
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--out", str(a_file / "sub"),
                      expect=["--out", "cannot be created"])


RUBRIC = "{evaluator: strongreject_rubric, prompts: {dataset: demo_harmful, split: eval, n: 2}, options: %s}"


@pytest.mark.parametrize("options,expect", [
    ("{base_url: 'htp:/x'}", ["evaluations[3].options.base_url", "htp:/x", "http"]),
    ("{base_url: 'http://'}", ["evaluations[3].options.base_url", "host"]),
    ("{base_url: 'https://judge.example.com/v1', api_key_env: FRPO_TEST_UNSET_KEY}",
     ["evaluations[3].options.api_key_env", "FRPO_TEST_UNSET_KEY", "is not set"]),
    ("{api_key_env: FRPO_TEST_UNSET_KEY}", ["evaluations[3].options.api_key_env", "FRPO_TEST_UNSET_KEY"]),
], ids=["bad-scheme", "no-host", "remote-no-key", "openai-no-key"])
def test_judge_endpoint_and_key_are_checked_before_compute(options, expect, capsys, isolated_cache, monkeypatch,
                                                           shared_data):
    monkeypatch.delenv("FRPO_TEST_UNSET_KEY", raising=False)
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", "evaluations.+=" + RUBRIC % options,
                      expect=expect)


def test_a_local_judge_endpoint_needs_no_key(monkeypatch, shared_data):
    from frpo_bench.evaluators.strongreject_rubric import Options
    from frpo_bench.typed import from_dict
    monkeypatch.delenv("FRPO_TEST_UNSET_KEY", raising=False)
    from_dict(Options, {"base_url": "http://127.0.0.1:8000/v1", "api_key_env": "FRPO_TEST_UNSET_KEY"}).preflight("x")


@pytest.mark.parametrize("template,expect", [
    (None, ["evaluations[3].options.template", "is not a file"]),
    ({"strongreject_rubric_system": "You judge.", "strongreject_rubric": "Prompt: {forbidden_prompt}"},
     ["evaluations[3].options.template", "response"]),
    ({"strongreject_rubric_system": "You judge.", "strongreject_rubric": "{forbidden_prompt} {response} {extra}"},
     ["evaluations[3].options.template", "extra"]),
    ("not json at all", ["evaluations[3].options.template", "JSON"]),
], ids=["missing", "no-response-placeholder", "unknown-placeholder", "not-json"])
def test_judge_templates_are_checked_before_compute(template, expect, tmp_path, capsys, isolated_cache):
    path = tmp_path / "templates.json"
    if template is not None:
        path.write_text(template if isinstance(template, str) else json.dumps(template))
    options = "{template: '%s', template_sha256: null, base_url: 'http://127.0.0.1:9/v1'}" % path
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", "evaluations.+=" + RUBRIC % options,
                      expect=expect)


def model_dir(tmp_path, tiny_model_dir, name, edit):
    import shutil
    out = tmp_path / name
    shutil.copytree(tiny_model_dir, out)
    edit(out)
    return out


def test_model_directories_are_checked_before_compute(tmp_path, tiny_model_dir, capsys, isolated_cache):
    no_config = model_dir(tmp_path, tiny_model_dir, "noconfig", lambda d: (d / "config.json").unlink())
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", f"model.id={no_config}",
                      expect=["model.id", "config.json"])

    def add_remote_code(d):
        config = json.loads((d / "config.json").read_text())
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
        (d / "config.json").write_text(json.dumps(config))
    remote = model_dir(tmp_path, tiny_model_dir, "remote", add_remote_code)
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", f"model.id={remote}",
                      expect=["model.id", "auto_map", "trust_remote_code"])
    from frpo_bench.config import ModelConfig
    from frpo_bench.models.loading import preflight
    preflight(ModelConfig(id=str(remote), trust_remote_code=True))  # the recipe may allow it


def test_an_empty_grid_is_an_error(capsys, isolated_cache):
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", "defenses=[]", expect=["defenses", "empty"])


# --- class 5: names that are not safe file names --------------------------------------------------

@pytest.mark.parametrize("override,field", [
    ("name=../../../../tmp/x", "name"),
    ("name=" + "n" * 300, "name"),
    ("name=a/b", "name"),
    ("evaluations.0.metric=../escape", "evaluations[0].metric"),
    ("attacks.0.name=a b/c", "attacks[0].name"),
    ("defenses.0.name=..", "defenses[0].name"),
], ids=["traversal", "too-long", "slash", "metric", "attack", "defense"])
def test_unsafe_names_are_refused(override, field, capsys, isolated_cache, tmp_path):
    err = run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", override, expect=[field])
    assert "letters, digits" in err
    assert not (tmp_path.parent / "x").exists()


def test_a_recipe_file_whose_name_is_unsafe_needs_a_name(tmp_path, capsys, isolated_cache):
    path = tmp_path / "my recipe!.yaml"
    path.write_text("model: {id: tiny-llama}\nevaluations:\n"
                    "  - {evaluator: refusal, prompts: {dataset: demo_harmful, split: eval, n: 4}}\n")
    run_fails_cleanly(capsys, isolated_cache, "run", str(path), expect=["name", "my recipe!"])


# --- class 6: the regression gate never passes on nothing -----------------------------------------

@pytest.fixture
def board(tmp_path):
    from test_leaderboard import RECORDS

    from frpo_bench.results import leaderboard
    from frpo_bench.results.schema import read_csv, to_csv
    path = tmp_path / "baseline.csv"
    path.write_text(to_csv(leaderboard.aggregate(RECORDS)))
    return path, read_csv(path)


def write_rows(path, rows):
    from frpo_bench.results.schema import to_csv
    path.write_text(to_csv(rows))
    return str(path)


def gate(capsys, baseline, current, *extra):
    code = main(["check", "--baseline", str(baseline), "--current", str(current), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("content,expect", [
    ("", "is empty"),
    ("schema_version,recipe,model,base,defense,attack,attack_lr,metric,higher_is_better,mean,std_over_seeds,ci95_low,"
     "ci95_high,n_seeds,n,evaluator,judge,template,dataset,split,dataset_revision\n", "no rows"),
    ("this is not a leaderboard\njust text\n", "lacks the columns"),
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00", "not a readable CSV"),
], ids=["empty", "header-only", "plain-text", "binary"])
def test_an_unusable_baseline_is_an_error_never_a_pass(content, expect, board, tmp_path, capsys):
    path, _ = board
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    for baseline, current in ((bad, path), (path, bad)):
        code, out = gate(capsys, baseline, current)
        assert code == 2 and expect in out and "Traceback" not in out, out


@pytest.mark.parametrize("column,value,expect", [("mean", "abc", "column mean"), ("n", "1.5", "column n"),
                                                  ("higher_is_better", "maybe", "column higher_is_better")])
def test_a_malformed_cell_names_line_and_column(column, value, expect, board, tmp_path, capsys):
    path, rows = board
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index(column)] = value
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1], ",".join(cells), *lines[3:]]) + "\n")
    code, out = gate(capsys, path, bad)
    assert code == 2 and expect in out and "line 3" in out, out


def test_a_missing_column_is_an_error(board, tmp_path, capsys):
    import csv
    path, _ = board
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as fh:
        writer = csv.DictWriter(fh, [c for c in rows[0] if c != "mean"])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k != "mean"} for r in rows)
    code, out = gate(capsys, path, bad)
    assert code == 2 and "mean" in out


def test_nan_means_are_an_error(board, tmp_path, capsys):
    path, rows = board
    for which in ("baseline", "current"):
        changed = [dict(r) for r in rows]
        changed[0]["mean"] = float("nan")
        other = write_rows(tmp_path / f"nan_{which}.csv", changed)
        baseline, current = (other, path) if which == "baseline" else (path, other)
        code, out = gate(capsys, baseline, current)
        assert code == 2 and "nan" in out.lower() and which in out, out


def test_metrics_the_baseline_lacks_are_an_error_unless_allowed(board, tmp_path, capsys):
    path, rows = board
    extra = dict(rows[0], metric="new_metric")
    current = write_rows(tmp_path / "current.csv", rows + [extra])
    code, out = gate(capsys, path, current)
    assert code == 2 and "new_metric" in out and "--allow-new-metrics" in out
    code, out = gate(capsys, path, current, "--allow-new-metrics")
    assert code == 0, out


def test_duplicate_rows_are_an_error(board, tmp_path, capsys):
    path, rows = board
    twice = write_rows(tmp_path / "twice.csv", rows + [dict(rows[0], mean=0.0)])
    for baseline, current in ((twice, path), (path, twice)):
        code, out = gate(capsys, baseline, current)
        assert code == 2 and "more than once" in out, out


def test_an_identical_leaderboard_passes(board, capsys):
    path, _ = board
    code, out = gate(capsys, path, path)
    assert code == 0 and "within bounds" in out


def test_a_store_that_is_a_file_is_refused_before_compute(tmp_path, capsys, isolated_cache):
    a_file = tmp_path / "store"
    a_file.write_text("x")
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--store", str(a_file), expect=["--store", "is a file"])


@pytest.mark.parametrize("override,expect", [
    ("evaluations.0.prompts.n=100000", ["dataset demo_harmful", "rows"]),
    ("evaluations.0.prompts={dataset: demo_harmful, split: eval, skip: 100000}", ["dataset demo_harmful", "rows"]),
    ("leaderboard.retention=1.5", ["leaderboard.retention", "(0, 1]"]),
    ("attacks.0.options.lora.target_modules=[]", ["attacks[0].options.lora.target_modules", "empty"]),
    ("evaluations.2.options.num_fewshot=-1", ["evaluations[2].options.num_fewshot", "negative"]),
    ("evaluations.2.options.max_gen_toks=0", ["evaluations[2].options.max_gen_toks", "positive"]),
    ("seeds=[]", ["seeds", "empty"]),
    ("evaluations=[]", ["evaluations", "empty"]),
    ("model=5", ["model", "mapping"]),
], ids=["n-beyond-split", "skip-beyond-split", "retention", "lora-targets", "fewshot", "gen-toks", "seeds", "evals",
        "model-scalar"])
def test_values_that_would_fail_or_mislabel_mid_run(override, expect, capsys, isolated_cache):
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", override, expect=expect)


def test_a_device_that_is_not_there_is_refused_before_compute(capsys, isolated_cache):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", "device=cuda", expect=["device", "cuda"])
    run_fails_cleanly(capsys, isolated_cache, "run", "smoke", "--set", "device=tpu", expect=["device", "tpu"])


@pytest.mark.parametrize("tolerance", ["harmful_refusal=inf", "harmful_refusal=nan", "harmful_refusal=x"])
def test_a_tolerance_that_is_not_a_finite_number_is_an_error(tolerance, board, capsys):
    path, _ = board
    code, out = gate(capsys, path, path, "--tolerance", tolerance)
    assert code == 2 and "--tolerance" in out


def test_a_merge_may_override_its_anchor_keys(tmp_path):
    """`<<: *anchor` then a key of the anchor is an override, not a duplicate (the demo recipes rely on it)."""
    from frpo_bench.typed import load_yaml
    assert load_yaml("a: &x {p: 1, q: 2}\nb: {<<: *x, q: 3}\n") == {"a": {"p": 1, "q": 2}, "b": {"p": 1, "q": 3}}
