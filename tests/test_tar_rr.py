"""TAR, RR and released-checkpoint defenses on the tiny model: the inner adversary never leaks, the outer
update moves the weights; rerouting falls while retain stays bounded, LoRA leaves the base alone."""
import json

import pytest
import torch
from safetensors.torch import load_file

from frpo_bench.defenses.checkpoint import CheckpointDefense, CheckpointOptions
from frpo_bench.defenses.rr import RRDefense, RROptions, rerouting_loss, rr_coefficients, target_layer_indices
from frpo_bench.defenses.tar import TARDefense, TAROptions, dpo_loss, negative_entropy, tamper_gradients
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.training.losses import representation_distance as retain_loss
from frpo_bench.typed import from_dict

HARMFUL = [{"dataset": "demo_compliance", "split": "train", "n": 16}]
REFUSALS = [{"dataset": "demo_refusals", "split": "train", "n": 16}]
BENIGN = [{"dataset": "demo_benign_sft", "split": "train", "n": 16}]


def test_schedule_layers_and_losses_on_constructed_inputs():
    assert rr_coefficients(0, 100, 10.0) == (0.0, 10.0) and rr_coefficients(100, 100, 10.0) == (5.0, 5.0)
    assert target_layer_indices([10 / 32, 20 / 32], 32) == [10, 20]
    assert target_layer_indices([10 / 32, 20 / 32], 30) == [9, 19]
    h = torch.randn(2, 1, 3, 8)
    mask = torch.ones(1, 3)
    assert rerouting_loss(h, h, mask).item() == pytest.approx(1.0)  # same direction: cosine 1
    assert rerouting_loss(-h, h, mask).item() == pytest.approx(0.0)  # opposed: ReLU cuts it to 0
    assert retain_loss(h, h, mask).item() == 0.0
    shifted = h.clone()
    shifted[..., 0] += 3.0
    assert retain_loss(shifted, h, mask).item() == pytest.approx(3.0)
    relative = (3.0 / h.norm(dim=-1)).mean().item()  # the same shift, measured against each token's own norm
    assert retain_loss(shifted, h, mask, relative=True).item() == pytest.approx(relative, rel=1e-5)
    with pytest.raises(ConfigError, match="retain_distance"):
        from_dict(RROptions, {"harmful": HARMFUL, "retain": BENIGN, "retain_distance": "cosine"}).validate("rr")
    with pytest.raises(ConfigError, match="reroute_tokens"):
        from_dict(RROptions, {"harmful": HARMFUL, "retain": BENIGN, "reroute_tokens": "prompt"}).validate("rr")
    chosen, rejected, zero = torch.tensor([2.0]), torch.tensor([-2.0]), torch.tensor([0.0])
    assert dpo_loss(chosen, rejected, zero, zero, 1.0) < dpo_loss(rejected, chosen, zero, zero, 1.0)


def tiny_batches(tiny_model_dir, n=2):
    from frpo_bench.data import load_rows
    from frpo_bench.models.loading import load_tokenizer
    from frpo_bench.training.batches import pad_batch, tokenize_pairs
    tokenizer = load_tokenizer(ModelRef(str(tiny_model_dir)), padding_side="right")
    features = tokenize_pairs(tokenizer, load_rows("demo_compliance", "train", 4 * n), 256)
    return [pad_batch(features[i * 4:(i + 1) * 4], tokenizer.pad_token_id) for i in range(n)]


def test_tar_inner_adversary_changes_weights_then_is_undone(tiny_model_dir):
    from frpo_bench.models.loading import load_model
    model = load_model(ModelRef(str(tiny_model_dir))).train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    batches = tiny_batches(tiny_model_dir, 3)
    grads, shift = tamper_gradients(model, params, batches, lambda m: negative_entropy(m, batches[0]), 1e-2, 1)
    assert shift > 1e-3  # the adversary really moved the weights inside the loop
    assert all(torch.equal(p, b) for p, b in zip(params, before))  # and none of it leaked out
    assert any(g.abs().sum() > 0 for g in grads) and all(p.grad is None for p in params)


def test_tar_outer_step_moves_the_weights(tiny_model_dir, tmp_path):
    options = from_dict(TAROptions, {"adversary_data": HARMFUL, "tamper_refusals": REFUSALS,
                                     "tamper_compliance": HARMFUL, "retain_data": BENIGN, "steps": 2,
                                     "inner_steps": 2, "inner_lrs": [1e-3], "lr": 1e-3, "batch_size": 4,
                                     "max_length": 256})
    ref = TARDefense().apply(ModelRef(str(tiny_model_dir)), tmp_path / "tar", options, seed=0, report=lambda m: None)
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(tmp_path / "tar" / "model.safetensors"))
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert ref.path == str(tmp_path / "tar") and len(moved) >= len(before) // 2
    log = json.loads((tmp_path / "tar" / "train_log.json").read_text())["history"]
    assert len(log) == 2 and all(h["adversary_shift"] > 0 for h in log)


SMALL_MODEL_RR = {"retain_distance": "relative_l2", "reroute_tokens": "response", "lr": 1e-2}


@pytest.mark.parametrize("variant", [{}, SMALL_MODEL_RR], ids=["upstream", "relative-response"])
def test_rr_reroutes_harmful_keeps_retain_and_leaves_base(tiny_model_dir, tmp_path, variant):
    base_before = load_file(str(tiny_model_dir / "model.safetensors"))
    options = from_dict(RROptions, {"harmful": HARMFUL, "retain": BENIGN + REFUSALS, "target_layers": [0.5, 1.0],
                                    "steps": 30, "batch_size": 4, "max_length": 256, "lr": 3e-2,
                                    "lora": {"r": 8, "alpha": 16}, **variant})
    ref = RRDefense().apply(ModelRef(str(tiny_model_dir)), tmp_path / "rr", options, seed=0, report=lambda m: None)
    assert ref.path == str(tiny_model_dir) and ref.adapter == str(tmp_path / "rr")
    history = json.loads((tmp_path / "rr" / "train_log.json").read_text())["history"]
    reroute = [h["rerouting_loss"] for h in history]
    assert reroute[0] > 0.9 and sum(reroute[-5:]) / 5 < 0.5 * reroute[0]  # starts at cos 1, falls
    # retain distance stays below the size of the representations themselves (the top layer's norm)
    from frpo_bench.models.loading import load_model, load_tokenizer
    tokenizer = load_tokenizer(ModelRef(str(tiny_model_dir)))
    with torch.no_grad():
        states = load_model(ModelRef(str(tiny_model_dir)))(**tokenizer(["Give three tips for staying healthy."],
                                                                        return_tensors="pt"), output_hidden_states=True)
    scale = states.hidden_states[-1].norm(dim=-1).mean().item()
    retain = [h["retain_loss"] for h in history]
    if variant.get("retain_distance") == "relative_l2":
        # measured against each token's own norm: the random tiny model's benign states move by up to
        # 2-3.3x their norm while rerouting dominates (peak 3.23 on a 2-core AVX2 EPYC, under 3 on a Xeon:
        # fp32 training differs by CPU), then the growing retain weight pulls them back
        assert max(retain) < 4.0 and sum(retain[-5:]) / 5 < 0.6 * max(retain)
    else:
        assert max(retain) < scale
    after = load_file(str(tiny_model_dir / "model.safetensors"))
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)


def test_checkpoint_defense_loads_a_local_model_through_the_hub_path_code(tiny_model_dir, tmp_path):
    from frpo_bench.models.loading import load_model
    options = from_dict(CheckpointOptions, {"model": str(tiny_model_dir)})
    ref = CheckpointDefense().apply(ModelRef("ignored"), tmp_path / "ck", options, seed=0, report=lambda m: None)
    assert ref == ModelRef(str(tiny_model_dir))
    loaded = load_model(ref).state_dict()
    saved = load_file(str(tiny_model_dir / "model.safetensors"))
    assert saved and all(torch.equal(saved[k], loaded[k]) for k in saved)  # the checkpoint's own weights
    assert options.key_fields()["weights"]  # a local checkpoint is identified by its files
    from frpo_bench.config import Recipe
    from frpo_bench.engine.pipeline import preflight
    recipe = from_dict(Recipe, {"name": "x", "model": {"id": "tiny-llama"}, "defenses": [
        {"name": "none"}, {"name": "rr_released", "type": "checkpoint",
                           "options": {"model": "GraySwanAI/Llama-3-8B-Instruct-RR"}}],
        "evaluations": [{"evaluator": "refusal", "prompts": {"dataset": "demo_harmful", "split": "eval"}}]})  # parses: `plan` works offline
    with pytest.raises(ConfigError) as err:  # offline and not cached: stopped before compute, naming the field
        preflight(recipe)
    assert err.value.field == "defenses[1].options.model" and "HF_HUB_OFFLINE" in err.value.problem


def test_rr_trains_with_the_recipes_lora_dropout(tiny_model_dir, tmp_path):
    """`lora.dropout` is part of RR's cache key, so the adapter must be trained with it (it was fixed at 0)."""
    options = from_dict(RROptions, {"harmful": HARMFUL, "retain": BENIGN, "target_layers": [1.0], "steps": 1,
                                    "batch_size": 2, "max_length": 64, "lora": {"r": 2, "alpha": 4, "dropout": 0.25}})
    RRDefense().apply(ModelRef(str(tiny_model_dir)), tmp_path / "rr", options, seed=0, report=lambda m: None)
    assert json.loads((tmp_path / "rr" / "adapter_config.json").read_text())["lora_dropout"] == 0.25
