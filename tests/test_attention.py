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
    assert gen.attention in attention.KERNELS and "measured on this CPU (bfloat16)" in resolved["generation.attention"]
    times = json.loads(attention.attention_probe_path().read_text())["bfloat16"]
    assert set(times) == set(attention.KERNELS) and gen.attention == attention.choose(times)
    monkeypatch.setattr(attention.subprocess, "run", lambda *a, **k: pytest.fail("probed twice"))
    again = from_dict(GenerationConfig, {"attention": "auto", "dtype": "bfloat16"}, "generation")
    again.resolve_installed("generation", "cpu")
    assert again.attention == gen.attention


def test_hf_generator_runs_each_kernel_to_the_same_greedy_text(tiny_model_dir, monkeypatch):
    from frpo_bench.models import ModelRef, generate_hf
    from frpo_bench.models.attention import KERNELS
    seen = []
    real = generate_hf.inference_model
    monkeypatch.setattr(generate_hf, "inference_model", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    prompts = ["hi", "hello there, how are you today?"]  # unequal lengths: left padding reaches the mask
    outputs = {}
    for kernel in KERNELS:
        cfg = from_dict(GenerationConfig, {"attention": kernel, "max_new_tokens": 6}, "generation")
        outputs[kernel] = generate_hf.HFGenerator().generate(ModelRef(str(tiny_model_dir)), prompts, cfg)
        assert seen[-1].config._attn_implementation == kernel
    # fp32 greedy on the tiny model (2 query heads per key/value head): the kernels agree
    assert outputs["eager"] == outputs["sdpa"] and outputs["grouped"] == outputs["eager"]


def test_another_kernel_than_sdpa_must_beat_it_by_the_margin():
    from frpo_bench.models.attention import choose
    assert choose({"sdpa": 1.0, "eager": 0.6, "grouped": 0.5}) == "grouped"
    assert choose({"sdpa": 1.0, "eager": 0.6, "grouped": 0.65}) == "eager"
    assert choose({"sdpa": 1.0, "eager": 0.8, "grouped": 0.75}) == "sdpa"


@pytest.mark.parametrize("boolean_mask", [False, True])
def test_grouped_kernel_is_eager_without_the_copies(boolean_mask):
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv

    from frpo_bench.models.grouped_attention import grouped_attention_forward
    torch.manual_seed(0)
    batch, heads, kv_heads, dim = 3, 6, 2, 8
    for q_len, kv_len in ((5, 5), (1, 7)):  # a prefill and a decode step
        q = torch.randn(batch, heads, q_len, dim)
        k, v = torch.randn(batch, kv_heads, kv_len, dim), torch.randn(batch, kv_heads, kv_len, dim)
        keep = torch.ones(batch, 1, q_len, kv_len, dtype=torch.bool)
        keep[0, :, :, :2] = False  # a left-padded row
        additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
        weights = torch.softmax(q @ repeat_kv(k, heads // kv_heads).transpose(2, 3) * 0.3 + additive, dim=-1)
        eager = (weights @ repeat_kv(v, heads // kv_heads)).transpose(1, 2)
        grouped, _ = grouped_attention_forward(None, q, k, v, keep if boolean_mask else additive, scaling=0.3)
        assert grouped.shape == (batch, q_len, heads, dim)
        torch.testing.assert_close(grouped, eager, rtol=1e-5, atol=1e-6)
        assert not torch.equal(grouped[:, :, 0], grouped[:, :, heads // kv_heads])  # heads of two groups differ


def test_auto_can_be_pinned(monkeypatch):
    monkeypatch.setenv("FRPO_BENCH_AUTO_ATTENTION", "eager")
    gen = from_dict(GenerationConfig, {"attention": "auto"}, "generation")
    assert "FRPO_BENCH_AUTO_ATTENTION=eager" in gen.resolve_installed("generation", "cpu")["generation.attention"]
    assert gen.attention == "eager"
