"""The files a run leaves for other tools, read back with those tools: lm-eval-shaped results and
samples (against a real lm-eval run's own files), the Inspect log (inspect_ai's reader), and
report.html (a real headless Chromium)."""
import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import require

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from frpo_bench.cli import main
    root = tmp_path_factory.mktemp("smoke")
    assert main(["run", "smoke", "--out", str(root / "run"), "--store", str(root / "store")]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def real_lm_eval_files(tmp_path_factory):
    """lm-eval itself on the tiny model, written by its own EvaluationTracker."""
    from lm_eval.loggers import EvaluationTracker

    from frpo_bench.evaluators import lm_eval_tasks
    from frpo_bench.models.tiny import build_tiny_model
    work = tmp_path_factory.mktemp("lm_eval_real")
    model = build_tiny_model(work / "model")
    task_path, task = lm_eval_tasks.write_task(work, "demo_arithmetic", "test")
    out = lm_eval_tasks.run_lm_eval(task_path.parent, task, {"pretrained": str(model), "dtype": "float32"},
                                    lm_eval_tasks.LmEvalOptions(num_fewshot=1, max_gen_toks=4, batch_size=2), [0, 1])
    samples = out.pop("samples")
    tracker = EvaluationTracker(output_path=str(work / "out"))
    tracker.save_results_aggregated(results=out, samples=samples)
    tracker.save_results_samples(task_name=task, samples=samples[task])
    results = next((work / "out").rglob("results_*.json"))
    return json.loads(results.read_text()), json.loads(next((work / "out").rglob("samples_*.jsonl")).read_text().splitlines()[0]), task


def test_lm_eval_files_have_the_key_structure_of_a_real_lm_eval_run(smoke_run, real_lm_eval_files):
    from lm_eval.utils import get_latest_filename, get_results_filenames, get_sample_results_filenames, make_table
    real, real_sample, real_task = real_lm_eval_files
    folders = sorted((smoke_run / "lm_eval").iterdir())
    assert [f.name for f in folders] == ["aligned__none__benign_full__lr0.0001__seed0",
                                         "aligned__none__harmful_lora__lr0.001__seed0", "aligned__none__none__seed0",
                                         "raw__none__none"]
    for folder in folders:
        names = [str(p) for p in sorted(folder.iterdir())]
        ours = json.loads(Path(get_latest_filename(get_results_filenames(names))).read_text())
        assert set(real) <= set(ours), f"top-level keys lm-eval writes and we lack: {set(real) - set(ours)}"
        assert set(real["config"]) <= set(ours["config"])
        tasks = set(ours["results"])
        assert tasks == {"harmful_refusal", "benign_refusal", "math_accuracy"}
        for section in ("configs", "versions", "n-shot", "higher_is_better", "n-samples", "group_subtasks"):
            assert set(ours[section]) == tasks, section
        for task, entry in ours["results"].items():
            assert set(real["results"][real_task]) - {k for k in real["results"][real_task] if "," in k} <= set(entry)
            metric_keys = [k for k in entry if "," in k]
            # every metric,filter has its metric_stderr,filter, as lm-eval writes them
            for k in metric_keys:
                metric, filt = k.split(",")
                if not metric.endswith("_stderr"):
                    assert f"{metric}_stderr,{filt}" in entry
                    assert metric in ours["higher_is_better"][task]
            assert set(ours["n-samples"][task]) == set(real["n-samples"][real_task]) == {"original", "effective"}
            assert set(real["configs"][real_task]) & set(ours["configs"][task]) >= {"task", "output_type", "metadata",
                                                                                     "metric_list", "num_fewshot"}
        assert ours["results"]["math_accuracy"]["math_accuracy,none"] == pytest.approx(
            next(json.loads(line)["value"] for line in (smoke_run / "results.jsonl").read_text().splitlines()
                 if json.loads(line)["metric"] == "math_accuracy"
                 and json.loads(line)["score_key"] == ours["frpo_bench"]["tasks"]["math_accuracy"]["score_key"]))
        assert "math_accuracy" in make_table(ours)  # lm-eval's own table printer reads it
        sample_files = get_sample_results_filenames(names)
        assert len(sample_files) == 3
        for path in sample_files:
            lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
            assert lines and all(set(real_sample) - {"exact_match"} <= set(line) for line in lines)
            task = Path(path).name[len("samples_"):].rsplit("_", 1)[0]
            assert all(line["metrics"] == [task] and task in line for line in lines)
            assert {line["filter"] for line in lines} <= {"none", "strict-match", "flexible-extract"}


def test_inspect_log_round_trips_through_read_eval_log(smoke_run):
    from inspect_ai.analysis import evals_df
    from inspect_ai.log import read_eval_log
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    path = Path(manifest["outputs"]["inspect_log"])
    log = read_eval_log(str(path))
    assert log.status == "success" and log.eval.task == "frpo-bench/smoke"
    records = [json.loads(line) for line in (smoke_run / "results.jsonl").read_text().splitlines()]
    refusal = next(r for r in records if r["metric"] == "harmful_refusal" and r["attack"] == "harmful_lora")
    mine = [s for s in log.samples if s.metadata["model"] == "aligned__none__harmful_lora__lr0.001__seed0"
            and s.metadata["dataset"] == "demo_harmful"]
    assert len(mine) == refusal["n"] == 8
    assert [s.scores["harmful_refusal"].value for s in mine] == refusal["per_sample"]
    assert all(s.output.completion == s.messages[-1].text for s in mine)
    names = {score.name for score in log.results.scores}
    assert "harmful_refusal @ aligned__none__harmful_lora__lr0.001__seed0" in names
    assert len(evals_df(str(path))) == 1  # Inspect's data-frame loader reads it too


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_opens_sorts_and_drills_down_in_a_headless_browser(smoke_run):
    require(chromium() is not None, "no Chromium on this machine: `make test` installs it with the system package manager")
    from playwright.sync_api import sync_playwright
    errors = []
    shots = REPO / "runs" / "browser-test"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((smoke_run / "report.html").as_uri())
        # the page opens on the headline: one row per model, one column per metric, its interval under the mean
        rows = list(csv.DictReader(open(smoke_run / "leaderboard.csv", encoding="utf-8")))
        headline = page.locator("#headline-table table")
        assert headline.locator("tbody tr").count() == len({(r["base"], r["defense"], r["attack"], r["attack_lr"])
                                                             for r in rows})
        heads = headline.locator("th").all_inner_texts()
        assert {f"{r['metric']} {'↑' if r['higher_is_better'] == 'true' else '↓'}" for r in rows} <= {h.strip(" ▲▼") for h in heads}
        first = headline.locator("tbody tr").first.locator("td").nth(4).inner_text()
        assert "\n[" in first and first.endswith("]")  # mean, then the interval on its own line
        assert page.locator("#robustness-table table tbody tr").count() >= 1
        table = page.locator("#leaderboard-table table")
        assert table.locator("tbody tr").count() == len((smoke_run / "leaderboard.csv").read_text().splitlines()) - 1

        def column(name):
            index = [h.strip(" ▲▼") for h in table.locator("th").all_inner_texts()].index(name)
            return [r.split("\t")[index] for r in table.locator("tbody tr").all_inner_texts()]
        table.locator("th", has_text="metric").click()
        assert column("metric") == sorted(column("metric"))
        table.locator("th", has_text="metric").click()
        assert column("metric") == sorted(column("metric"), reverse=True)
        page.fill("#leaderboard-filter", "harmful_lora")
        assert set(column("attack")) == {"harmful_lora"}
        page.locator("button.drill").first.click()
        drill = page.locator("#drill")
        assert drill.is_visible() and drill.locator("tr.sample").count() >= 8
        assert "harmful_refusal" in drill.inner_text()
        page.screenshot(path=str(shots / "report.png"), full_page=False)
        browser.close()
    assert not errors, errors
    assert (shots / "report.png").stat().st_size > 10_000


HOSTILE = ["<!--<script>", "</script><script>window.__pwned = 1</script>", "<img src=x onerror=\"window.__pwned = 2\">",
           "<script>window.__pwned = 3</script>", "a & b <!-- not a comment -->"]


def test_report_renders_hostile_completions_as_text_and_runs_no_script(smoke_run, tmp_path):
    """Completions and prompts are model and user text: whatever they hold, every row renders and no script runs."""
    require(chromium() is not None, "no Chromium on this machine: `make test` installs it with the system package manager")
    from playwright.sync_api import sync_playwright

    from frpo_bench.results import html_report
    page_html = (smoke_run / "report.html").read_text(encoding="utf-8")
    start = page_html.index('<script id="report-data" type="application/json">') + len(
        '<script id="report-data" type="application/json">')
    data = json.loads(page_html[start:page_html.index("</script>", start)])
    cell = next(iter(data["samples"]))
    items = [item for group in data["samples"][cell] for item in group["items"]]  # the drill shows every group
    for i, item in enumerate(items):
        item["prompt"], item["response"] = HOSTILE[i % len(HOSTILE)], HOSTILE[(i + 1) % len(HOSTILE)]
    data["leaderboard"][0]["judge"] = HOSTILE[0]
    hostile_page = tmp_path / "report.html"
    hostile_page.write_text(html_report.render(data), encoding="utf-8")
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(hostile_page.as_uri())
        rows = page.locator("#leaderboard-table table tbody tr")
        assert rows.count() == len(data["leaderboard"])
        page.locator(f"button.drill[data-cell='{cell}']").first.click()
        drill = page.locator("#drill")
        assert drill.locator("tr.sample").count() == len(items)
        shown = drill.inner_text()
        assert all(text.strip() in shown for text in HOSTILE[:4])  # shown as text, not parsed as markup
        assert page.evaluate("window.__pwned") is None
        browser.close()
    assert not errors, errors
