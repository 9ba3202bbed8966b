"""GRPO/FRPO hardening through TRL on the tiny model: the adapter moves, the base does not, and the
FRPO advantages TRL trains on are exactly frpo_advantages of each group's rewards."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from frpo_bench.defenses.frpo import FRPODefense
from frpo_bench.defenses.frpo_math import frpo_advantages
from frpo_bench.defenses.rewards import helpful_proxy_reward, refusal_reward
from frpo_bench.defenses.rl_options import FRPOOptions
from frpo_bench.evaluators.text_checks import is_degenerate
from frpo_bench.models import ModelRef
from frpo_bench.training.options import FinetuneConfig
from frpo_bench.training.sft import finetune
from frpo_bench.typed import from_dict


@pytest.fixture(scope="module")
def refusing_tiny(tiny_model_dir, tmp_path_factory):
    """The tiny model after a quick safety SFT, so sampled replies sometimes refuse (mixed reward groups)."""
    cfg = from_dict(FinetuneConfig, {"data": [{"dataset": "demo_refusals", "split": "train", "n": 48},
                                                            {"dataset": "demo_benign_sft", "split": "train", "n": 48}],
                                   "steps": 40, "batch_size": 8, "micro_batch_size": 8, "max_length": 64})
    out = tmp_path_factory.mktemp("aligned_tiny")
    return finetune(ModelRef(str(tiny_model_dir)), out, cfg, lr=3e-3, seed=0, report=lambda m: None)


def frpo_options(**extra):
    raw = {"harmful_prompts": {"dataset": "demo_harmful", "split": "train", "n": 8},
           "benign_prompts": {"dataset": "demo_benign", "split": "train", "n": 8},
           "steps": 3, "prompts_per_step": 4, "num_generations": 4, "max_completion_length": 12,
           "lora": {"r": 4, "alpha": 8}, "lam": 0.5, "lr": 5e-3, "warmup_ratio": 0.0, "lr_scheduler": "constant", **extra}
    return from_dict(FRPOOptions, raw, "defenses[0].options")


def test_frpo_moves_adapter_and_leaves_base(refusing_tiny, tmp_path):
    base_before = {k: v.clone() for k, v in load_file(f"{refusing_tiny.path}/model.safetensors").items()}
    lines = []
    ref = FRPODefense().apply(refusing_tiny, tmp_path / "frpo", frpo_options(), seed=0, report=lines.append)
    assert ref.adapter == str(tmp_path / "frpo") and ref.path == refusing_tiny.path
    base_after = load_file(f"{refusing_tiny.path}/model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    adapter = load_file(str(tmp_path / "frpo" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    log = json.loads((tmp_path / "frpo" / "train_log.json").read_text())
    assert len(log["history"]) == 3
    assert all("frpo/robust_objective" in h and "frac_reward_zero_std" in h for h in log["history"])
    assert any(h["frac_reward_zero_std"] < 1 for h in log["history"])  # some groups had reward variance
    assert any("robust_objective" in line and "zero-std groups" in line for line in lines)


def test_frpo_advantages_reach_the_loss(refusing_tiny, tmp_path, monkeypatch):
    """Capture what TRL's loss receives and compare with the pure function on the same rewards."""
    from frpo_bench.defenses import trl_adapter
    seen = []
    make = trl_adapter._trainer_class

    def spying_class():
        cls = make()

        class Spy(cls):
            def _generate_and_score_completions(self, inputs):
                out = super()._generate_and_score_completions(inputs)
                totals = (self._last_rewards * self.reward_weights.unsqueeze(0)).nansum(dim=1)
                seen.append((totals.view(-1, self.num_generations).numpy().copy(), out["advantages"].numpy().copy()))
                return out
        return Spy

    monkeypatch.setattr(trl_adapter, "_trainer_class", spying_class)
    FRPODefense().apply(refusing_tiny, tmp_path / "frpo", frpo_options(steps=2, jackknife=False), seed=1,
                        report=lambda m: None)
    assert seen
    for groups, advantages in seen:
        expected = np.concatenate([frpo_advantages(g, 0.5, jackknife=False) for g in groups])
        assert np.allclose(advantages, expected, atol=1e-5)


def test_rewards_apply_to_their_own_prompt_kind():
    completions = [[{"role": "assistant", "content": "I'm sorry, I can't help with that."}],
                   [{"role": "assistant", "content": "Paris is the capital of France."}],
                   [{"role": "assistant", "content": "yes yes yes yes yes yes yes yes yes"}]]
    kinds = ["harmful", "benign", "benign"]
    assert refusal_reward(None, completions, kinds) == [1.0, None, None]
    assert helpful_proxy_reward(None, completions, kinds) == [None, 1.0, 0.0]
    assert is_degenerate("a b c a b c a b c a b c a b c") and not is_degenerate("one two three four five six seven")


def test_bad_rl_options_are_caught_by_name():
    from frpo_bench.errors import ConfigError
    with pytest.raises(ConfigError, match=r"defenses\[0\].options.lam"):
        frpo_options(lam=0)
    with pytest.raises(ConfigError, match=r"num_generations"):
        frpo_options(num_generations=1)


def test_sampling_copy_holds_the_merged_policy_in_bf16_and_leaves_the_policy_alone(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from frpo_bench.training.sampling_copy import SamplingCopy, lora_layers
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                            LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    sampler = SamplingCopy()
    copy = sampler.refresh(policy)
    assert next(copy.parameters()).dtype == torch.bfloat16
    name, layer = next(iter(lora_layers(policy.get_base_model()).items()))
    merged = layer.base_layer.weight + layer.get_delta_weight("default")
    assert torch.equal(copy.get_submodule(name).weight, merged.to(torch.bfloat16))
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())  # nothing merged in place
    with torch.no_grad():  # a training step later, the next refresh follows the policy
        layer.lora_B["default"].weight.add_(1.0)
    again = sampler.refresh(policy)
    assert again is copy and torch.equal(copy.get_submodule(name).weight,
                                         (layer.base_layer.weight + layer.get_delta_weight("default")).to(torch.bfloat16))


def test_sampling_copy_follows_the_runs_bf16_choice_and_its_key_says_so(tiny_model_dir):
    """Where bf16 measured slower (auto -> false), the copy is fp32: bf16 matmuls on a CPU without native bf16
    ran 45x slower than fp32 here. The fp32 copy is another rollout distribution, so another key; the bf16
    copy's key stays what it was."""
    from transformers import AutoModelForCausalLM

    from frpo_bench.training.sampling_copy import SamplingCopy
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    copy = SamplingCopy("float32").refresh(policy)
    assert next(copy.parameters()).dtype == torch.float32
    assert all(torch.equal(copy.state_dict()[k], v) for k, v in policy.state_dict().items())
    on, off = frpo_options(sampling_copy=True, bf16=True), frpo_options(sampling_copy=True, bf16=False)
    assert (on.sampling_copy_dtype(), off.sampling_copy_dtype()) == ("bfloat16", "float32")
    assert "sampling_copy_dtype" not in on.key_fields() and off.key_fields()["sampling_copy_dtype"] == "float32"
    assert "sampling_copy_dtype" not in frpo_options(bf16=False).key_fields()  # no copy, nothing to say


def test_frpo_samples_from_the_copy_when_asked(refusing_tiny, tmp_path, monkeypatch):
    from frpo_bench.training import sampling_copy
    refreshed = []
    original = sampling_copy.SamplingCopy.refresh
    monkeypatch.setattr(sampling_copy.SamplingCopy, "refresh", lambda self, p: refreshed.append(1) or original(self, p))
    base_before = {k: v.clone() for k, v in load_file(f"{refusing_tiny.path}/model.safetensors").items()}
    FRPODefense().apply(refusing_tiny, tmp_path / "frpo", frpo_options(sampling_copy=True), seed=0, report=lambda m: None)
    assert len(refreshed) == 3  # one refresh per step's rollouts
    adapter = load_file(str(tmp_path / "frpo" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert all(torch.equal(base_before[k], v) for k, v in load_file(f"{refusing_tiny.path}/model.safetensors").items())


def test_the_attackers_reward_is_the_refusal_reward_negated_on_harmful_prompts():
    from frpo_bench.defenses.rewards import compliance_reward
    replies = ["I cannot help with that.", "Sure, step one is", "I'm sorry, no.", "Here you go"]
    kinds = ["harmful", "harmful", "benign", "harmful"]
    assert compliance_reward(None, replies, kinds) == [0.0, 1.0, None, 1.0]
    assert [None if c is None else 1 - c for c in compliance_reward(None, replies, kinds)] == [
        r for r in refusal_reward(None, replies, kinds)]


def test_harmful_rl_trains_an_adapter_toward_compliance_and_keeps_its_trajectory(refusing_tiny, tmp_path):
    """GRPO from the defended model on harmful prompts only: the base is untouched, the adapter moved, the model
    after step 1 kept as a trajectory point, and the log gives steps, tokens, reward and loss by step."""
    from frpo_bench.attacks.harmful_rl import HarmfulRLAttack, HarmfulRLOptions
    from frpo_bench.models.artifact import checkpoint_record
    options = from_dict(HarmfulRLOptions, {"harmful_prompts": {"dataset": "demo_harmful", "split": "train", "n": 8},
                                           "steps": 2, "prompts_per_step": 4, "num_generations": 4,
                                           "max_completion_length": 12, "lora": {"r": 4, "alpha": 8},
                                           "warmup_ratio": 0.0, "lr_scheduler": "constant"}, "attacks[0].options")
    assert options.benign_prompts is None and options.safety_reward == "compliance" and options.beta == 0.0
    base_before = {k: v.clone() for k, v in load_file(f"{refusing_tiny.path}/model.safetensors").items()}
    out = tmp_path / "attack"
    ref = HarmfulRLAttack().apply(refusing_tiny, out, options, lr=5e-3, seed=0, report=lambda m: None,
                                  checkpoint_steps=[1])
    assert ref.adapter == str(out)
    base_after = load_file(f"{refusing_tiny.path}/model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert (out / checkpoint_record(1)).is_file() and (out / "checkpoints" / "step-1" / "adapter_model.safetensors").is_file()
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == log["planned_steps"] == 2 and log["tokens"] > 0
    assert [h["step"] for h in log["history"]] == [1, 2] and all("reward" in h and "loss" in h for h in log["history"])
    assert log["history"][0]["num_input_tokens_seen"] < log["tokens"]  # tokens by step, for the trajectory's compute
