"""`import frpo_bench`, `plan` and `ls` stay light: no torch, transformers or lm-eval; `plan` needs no data."""
import os
import subprocess
import sys

CODE = """
import sys
import frpo_bench.cli as cli
assert cli.main(["ls"]) == 0
assert cli.main(["ls", "--options"]) == 0
assert cli.main(["plan", "smoke"]) == 0
assert cli.main(["plan", "paper"]) == 0
heavy = [m for m in ("torch", "transformers", "lm_eval", "peft", "vllm") if m in sys.modules]
print("HEAVY", heavy)
"""


def test_plan_and_ls_import_no_torch():
    """Offline, with no dataset here (no FRPO_BENCH_DATA, an empty download cache): `plan paper` still plans
    every stage and lists what a run would download."""
    env = {k: v for k, v in os.environ.items() if k != "FRPO_BENCH_DATA"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert ("data aoa_identity_shift: to download: https://raw.githubusercontent.com/LLM-Tuning-Safety/"
            in out.stdout), out.stdout[-2000:]
    assert "data strongreject: to download: https://" in out.stdout and "recipe paper: 1440 cells" in out.stdout
    assert "datasets:" in out.stdout and "recipes:" in out.stdout
    for section in ("\nlora:", "\ndata refs:", "\ntrajectory:", "eval_every", "attack finetune options:"):
        assert section in out.stdout, section  # every recipe section and component option has its help


def test_every_packaged_recipe_validates():
    from frpo_bench.config import load_recipe, recipe_names
    from frpo_bench.engine.plan import build_plan
    assert {"smoke", "demo", "paper"} <= set(recipe_names())
    for name in recipe_names():
        recipe, _ = load_recipe(name)
        cells, stages = build_plan(recipe)
        assert cells and stages


def test_dry_run_executes_nothing(isolated_cache, capsys):
    from frpo_bench.cli import main
    assert main(["run", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "0 cached, 24 to run" in out and "data demo_harmful: generated" in out
    assert not isolated_cache.exists() or not any(isolated_cache.rglob("COMPLETE"))
