"""Refusal-direction ablation: the direction is the difference of means, every residual write is orthogonal to it
afterwards, nothing else moved, the ablated weights act as the ablation hooks do, and the paper's rule chooses."""
import json

import pytest
import torch
from safetensors.torch import load_file

from frpo_bench.attacks.refusal_ablation import (
    Forward,
    RefusalAblationAttack,
    RefusalAblationOptions,
    choose_direction,
    post_instruction_tokens,
    prompt_texts,
    refusal_score,
)
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.models.loading import load_model, load_tokenizer
from frpo_bench.typed import from_dict

WRITERS = ("embed_tokens.weight", "o_proj.weight", "down_proj.weight")


def options(**extra) -> RefusalAblationOptions:
    raw = {"harmful": {"dataset": "demo_harmful", "split": "train", "n": 6},
           "harmless": {"dataset": "demo_benign", "split": "train", "n": 6},
           "harmful_val": {"dataset": "demo_harmful", "split": "eval", "n": 4},
           "harmless_val": {"dataset": "demo_benign", "split": "eval", "n": 4}, "batch_size": 4,
           "max_layer_share": 1.0, **extra}  # the tiny model has 2 layers, and the first one's candidates are zero
    return from_dict(RefusalAblationOptions, raw, "attacks[0].options")


@pytest.fixture(scope="module")
def ablated(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablated")
    ref = RefusalAblationAttack().apply(ModelRef(str(tiny_model_dir)), out, options(), seed=0, report=lambda m: None)
    return ref, out


def test_every_residual_write_is_orthogonal_to_the_direction_and_nothing_else_changed(tiny_model_dir, ablated):
    ref, out = ablated
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    unit = load_file(str(out / "direction.safetensors"))["direction"]
    unit = unit / unit.norm()
    changed = [k for k in before if k.endswith(WRITERS)]
    assert len(changed) == 1 + 2 * 2  # the embedding, and o_proj and down_proj of both layers
    for name in changed:
        weight = after[name]
        along = weight @ unit if name.startswith("model.embed_tokens") else unit @ weight
        assert along.norm() < 1e-6 * weight.norm(), name
        assert not torch.equal(weight, before[name]), name
    for name in set(before) - set(changed):
        assert torch.equal(after[name], before[name]), name
    # the tiny model ties its output embedding: untied, it keeps the original values
    assert torch.equal(after["lm_head.weight"], before["model.embed_tokens.weight"])
    assert not json.loads((out / "config.json").read_text())["tie_word_embeddings"]


def test_the_direction_is_the_difference_of_means_computed_one_prompt_at_a_time(tiny_model_dir, ablated):
    ref, out = ablated
    record = json.loads((out / "train_log.json").read_text())
    tokenizer = load_tokenizer(ModelRef(str(tiny_model_dir)))
    lm = load_model(ModelRef(str(tiny_model_dir))).eval()
    tail = post_instruction_tokens(tokenizer)
    assert tail == record["post_instruction_tokens"] > 0

    def mean(ref_):  # no padding, no batching: each prompt alone
        acts = []
        for text in prompt_texts(tokenizer, ref_):
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                states = lm(input_ids=ids, output_hidden_states=True).hidden_states
            acts.append(states[record["layer"]][0, record["position"]])
        return torch.stack(acts).mean(0)

    by_hand = mean(options().harmful) - mean(options().harmless)
    stored = load_file(str(out / "direction.safetensors"))["direction"]
    assert torch.allclose(stored, by_hand, atol=1e-5, rtol=1e-4)
    assert record["steps"] == 0 and record["tokens"] == 0
    # layer 0's input at the template's tokens is their embedding whatever the instruction: no direction there
    assert [(c["layer"], c["position"]) for c in record["candidates"]] == [(1, p) for p in range(-tail, 0)]


def test_orthogonalized_weights_act_as_ablation_at_run_time(tiny_model_dir, ablated):
    ref, out = ablated
    tokenizer = load_tokenizer(ModelRef(str(tiny_model_dir)))
    texts = prompt_texts(tokenizer, options().harmful_val)
    direction = load_file(str(out / "direction.safetensors"))["direction"]
    with torch.no_grad():
        original = Forward(load_model(ModelRef(str(tiny_model_dir))).eval(), tokenizer, 4)
        with original.ablating(direction):
            hooked = original.last_logits(texts)
        plain = original.last_logits(texts)
        weights = Forward(load_model(ref).eval(), tokenizer, 4).last_logits(texts)
    assert torch.allclose(weights, hooked, atol=1e-4)
    assert not torch.allclose(weights, plain, atol=1e-4)


def test_the_paper_rule_takes_the_lowest_bypass_that_passes_both_filters():
    candidates = [{"layer": 0, "position": -1, "bypass": -9.0, "induce": -1.0, "kl": 0.01},  # induces nothing
                  {"layer": 1, "position": -2, "bypass": -8.0, "induce": 2.0, "kl": 0.5},  # moves harmless too much
                  {"layer": 2, "position": -1, "bypass": -3.0, "induce": 1.0, "kl": 0.05},
                  {"layer": 3, "position": -3, "bypass": -1.0, "induce": 4.0, "kl": 0.02}]
    assert choose_direction(candidates, 0.1) == {"layer": 2, "position": -1, "filters": "kl+induce"}
    assert choose_direction(candidates[:2], 0.1) == {"layer": 0, "position": -1, "filters": "kl"}
    assert choose_direction(candidates[1:2], 0.1) == {"layer": 1, "position": -2, "filters": "none"}
    unmeasured = {"layer": 4, "position": -1, "bypass": -2.0, "induce": None, "kl": 0.01}  # skipped: it cannot win
    assert choose_direction(candidates + [unmeasured], 0.1)["layer"] == 2


def test_refusal_score_is_the_log_odds_of_the_refusal_tokens():
    logits = torch.log(torch.tensor([[0.1, 0.3, 0.6]]))
    assert refusal_score(logits, [0, 1]).item() == pytest.approx(torch.log(torch.tensor(0.4 / 0.6)).item(), abs=1e-6)


@pytest.mark.parametrize("extra,field", [({"layer": 3}, "layer"), ({"layer": 1, "position": 0}, "position"),
                                         ({"max_layer_share": 0}, "max_layer_share"),
                                         ({"refusal_tokens": []}, "refusal_tokens")])
def test_bad_options_name_their_field(extra, field):
    with pytest.raises(ConfigError, match=field):
        options(**extra)


def test_batched_logits_from_the_shared_opening_equal_each_prompt_run_alone(tiny_model_dir):
    from frpo_bench.models.shared_prefix import opening
    tokenizer = load_tokenizer(ModelRef(str(tiny_model_dir)))
    lm = load_model(ModelRef(str(tiny_model_dir))).eval()
    from frpo_bench.data import ref_rows
    from frpo_bench.models.loading import chat_prompt
    system = "You are a careful assistant. Answer in one short sentence."  # an opening the prompts share
    texts = [chat_prompt(tokenizer, row["prompt"], system)
             for ref in (options().harmful_val, options().harmless_val) for row in ref_rows(ref)]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len(opening([lm], ids)[0]) >= 8  # the cached path is the one under test
    with torch.no_grad():
        batched = Forward(lm, tokenizer, 3).last_logits(texts)
        alone = torch.cat([lm(input_ids=torch.tensor([row])).logits[:, -1] for row in ids])
    assert torch.allclose(batched, alone, atol=1e-4)
