"""generation.attention: validated, `auto` measured on this machine (cached), and part of the key only
when it is not transformers' default, so every existing key stays as it was."""
import json

import pytest

from frpo_bench.config import GenerationConfig
from frpo_bench.errors import ConfigError
from frpo_bench.typed import from_dict


def test_attention_is_checked_by_name():
    with pytest.raises(ConfigError, match="attention"):
        from_dict(GenerationConfig, {"attention": "flash"}, "generation")


def test_default_keeps_keys_and_eager_enters_them():
    default = from_dict(GenerationConfig, {}, "generation").key_fields()
    assert "attention" not in default
    eager = from_dict(GenerationConfig, {"attention": "eager"}, "generation").key_fields()
    assert eager == {**default, "attention": "eager"}


def test_auto_is_measured_once_and_cached(isolated_cache, monkeypatch):
    from frpo_bench.models import attention
    monkeypatch.delenv(attention.AUTO_ENV, raising=False)
    monkeypatch.setattr(attention, "gpu_visible", lambda: False)
    gen = from_dict(GenerationConfig, {"attention": "auto", "dtype": "bfloat16"}, "generation")
    resolved = gen.resolve_installed("generation", "cpu")
    assert gen.attention in ("sdpa", "eager") and "measured on this CPU (bfloat16)" in resolved["generation.attention"]
    times = json.loads(attention.attention_probe_path().read_text())["bfloat16"]
    assert gen.attention == ("eager" if times["eager"] < attention.EAGER_MARGIN * times["sdpa"] else "sdpa")
    monkeypatch.setattr(attention.subprocess, "run", lambda *a, **k: pytest.fail("probed twice"))
    again = from_dict(GenerationConfig, {"attention": "auto", "dtype": "bfloat16"}, "generation")
    again.resolve_installed("generation", "cpu")
    assert again.attention == gen.attention


def test_hf_generator_runs_the_eager_kernel(tiny_model_dir, monkeypatch):
    from frpo_bench.models import ModelRef, generate_hf
    seen = []
    real = generate_hf.inference_model
    monkeypatch.setattr(generate_hf, "inference_model", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    cfg = from_dict(GenerationConfig, {"attention": "eager", "max_new_tokens": 4}, "generation")
    eager = generate_hf.HFGenerator().generate(ModelRef(str(tiny_model_dir)), ["hi", "hello there"], cfg)
    assert seen[-1].config._attn_implementation == "eager"
    sdpa = generate_hf.HFGenerator().generate(ModelRef(str(tiny_model_dir)), ["hi", "hello there"],
                                              from_dict(GenerationConfig, {"max_new_tokens": 4}, "generation"))
    assert seen[-1].config._attn_implementation == "sdpa"
    assert eager == sdpa  # fp32 greedy on the tiny model: the kernels agree


def test_auto_can_be_pinned(monkeypatch):
    monkeypatch.setenv("FRPO_BENCH_AUTO_ATTENTION", "eager")
    gen = from_dict(GenerationConfig, {"attention": "auto"}, "generation")
    assert "FRPO_BENCH_AUTO_ATTENTION=eager" in gen.resolve_installed("generation", "cpu")["generation.attention"]
    assert gen.attention == "eager"
