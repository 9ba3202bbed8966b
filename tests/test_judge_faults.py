"""The rubric judge against a misbehaving OpenAI-compatible endpoint on 127.0.0.1 (a real HTTP server the
OpenAI client talks to): 5xx, 429 with Retry-After, a body that is not JSON, verdicts that do not parse, and
an endpoint that never answers."""
import csv
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from frpo_bench.evaluators.base import ScoreInputs
from frpo_bench.evaluators.openai_judge import JudgeError
from frpo_bench.evaluators.strongreject_rubric import Options, StrongRejectRubricEvaluator
from frpo_bench.models import ModelRef
from frpo_bench.typed import from_dict

GOOD = "#scores\n1.a no\n1.b 0\n2.a x\n2.b 4\n3.a y\n3.b 5\n"  # score (4 + 5 - 2) / 8 = 0.875
ROWS = [{"id": str(i), "prompt": f"forbidden request {i}"} for i in range(3)]


class FakeJudge:
    """Answers each POST by the plan's next step ("ok", "garbled", "500", "429:SECONDS", "notjson", "hang"),
    repeating the last one; records when each request came."""

    def __init__(self):
        self.plan, self.times = ["ok"], []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                judge.times.append(time.monotonic())
                step = judge.plan.pop(0) if len(judge.plan) > 1 else judge.plan[0]
                if step == "hang":
                    time.sleep(30)
                    return
                if step in ("500",) or step.startswith("429"):
                    self.send_response(int(step[:3]))
                    if step.startswith("429:"):
                        self.send_header("Retry-After", step[4:])
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "busy"}}')
                    return
                body = b"<html>a login page</html>" if step == "notjson" else json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": "judge",
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": GOOD if step == "ok" else "I would rather not grade this."}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake_judge(shared_data):
    judge = FakeJudge()
    yield judge
    judge.server.shutdown()


def score(judge, shared_data, tmp_path, rows=ROWS, **options):
    opts = from_dict(Options, {"base_url": judge.base_url, "judge_model": "judge", "max_concurrency": 1,
                               "template": str(shared_data / "strongreject" / "judge_templates.json"), **options})
    inputs = ScoreInputs(rows, list(range(len(rows))), ["a response"] * len(rows), ModelRef("unused"), True,
                         "strongreject", "all", {}, tmp_path)
    return StrongRejectRubricEvaluator().score(inputs, opts)


def test_server_errors_are_retried_and_then_answered(fake_judge, shared_data, tmp_path):
    fake_judge.plan = ["500", "500", "ok"]
    result = score(fake_judge, shared_data, tmp_path, rows=ROWS[:1])
    assert result.meta["tally"]["retries"] == 2 and result.records[0]["score"] == 0.875


def test_retry_after_is_honoured(fake_judge, shared_data, tmp_path):
    fake_judge.plan = ["429:2", "ok"]
    result = score(fake_judge, shared_data, tmp_path, rows=ROWS[:1])
    assert result.records[0]["score"] == 0.875
    assert fake_judge.times[1] - fake_judge.times[0] >= 1.9  # the server's 2 s, not the first backoff's 1 s


def test_an_answer_that_is_not_json_names_the_judge(fake_judge, shared_data, tmp_path):
    fake_judge.plan = ["notjson"]
    with pytest.raises(JudgeError, match=r"judge .*127\.0\.0\.1.*:judge.*not JSON"):
        score(fake_judge, shared_data, tmp_path, rows=ROWS[:1], max_retries=1)


def test_a_hung_endpoint_fails_within_the_deadline_naming_the_judge(fake_judge, shared_data, tmp_path):
    fake_judge.plan = ["hang"]
    started = time.monotonic()
    with pytest.raises(JudgeError, match=r"judge .*127\.0\.0\.1.* no answer within 3s"):
        score(fake_judge, shared_data, tmp_path, rows=ROWS[:1], timeout=1, deadline=3)
    assert time.monotonic() - started < 10  # the defaults once held a request about 19.5 minutes


def test_unparsable_verdicts_are_never_cached_and_a_good_judge_replaces_them(fake_judge, shared_data, tmp_path):
    fake_judge.plan = ["garbled"]
    first = score(fake_judge, shared_data, tmp_path)
    assert first.meta["n_unparsed"] == 3 and "did not parse" in first.meta["incomplete"]
    assert [r["score"] for r in first.records] == [None] * 3
    again = score(fake_judge, shared_data, tmp_path)  # nothing cached: asked again
    assert again.meta["tally"]["requests"] == 3 and again.meta["tally"]["cache_hits"] == 0
    fake_judge.plan = ["ok"]  # the same judge identity, now answering in the rubric's format
    fixed = score(fake_judge, shared_data, tmp_path)
    assert [r["score"] for r in fixed.records] == [0.875] * 3 and "incomplete" not in fixed.meta
    cached = score(fake_judge, shared_data, tmp_path)
    assert cached.meta["tally"]["cache_hits"] == 3 and cached.meta["tally"]["requests"] == 0


@pytest.mark.slow
def test_a_run_whose_judge_answers_never_parse_ends_with_a_clear_message_and_a_complete_report(
        fake_judge, shared_data, tmp_path, capsys):
    from frpo_bench.cli import main
    fake_judge.plan = ["garbled"]
    template = shared_data / "strongreject" / "judge_templates.json"
    args = ["run", "smoke", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "run"),
            "--set", "leaderboard.capability_metric=null",
            "--set", "evaluations=[{evaluator: refusal, prompts: {dataset: demo_harmful, split: eval, n: 4}, "
                     "metric: harmful_refusal}, {evaluator: strongreject_rubric, metric: strongreject, prompts: "
                     f"{{dataset: demo_harmful, split: eval, n: 4}}, options: {{base_url: '{fake_judge.base_url}', "
                     f"judge_model: judge, template: '{template}'}}}}]"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "strongreject" in captured.err and "no scored sample" in captured.err and "did not parse" in captured.err
    run = tmp_path / "run"
    assert (run / "report.html").is_file() and (run / "leaderboard.csv").is_file()
    fake_judge.plan = ["ok"]  # the judge fixed: its answers are asked again, not read from a cache
    assert main(args) == 0
    with open(run / "leaderboard.csv", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["metric"] == "strongreject"]
    assert rows and all(float(r["mean"]) == 0.875 and int(r["n"]) == 4 for r in rows)
