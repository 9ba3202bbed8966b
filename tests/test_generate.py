"""The HF backend: chat template applied, order kept, batching does not change greedy output (fp32)."""
import pytest

from frpo_bench.config import GenerationConfig
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.models.generate_hf import HFGenerator
from frpo_bench.models.loading import chat_prompt, load_tokenizer
from frpo_bench.typed import from_dict

PROMPTS = ["What is 2 plus 2?", "Name three fruits that are red, please, and say why they are red.", "Hi",
           "Spell the word 'planet' backwards.", "How many days are in 3 weeks?"]


def gen_cfg(batch_size):
    return from_dict(GenerationConfig, {"dtype": "float32", "max_new_tokens": 6, "batch_size": batch_size})


def test_batched_equals_one_by_one(tiny_model_dir):
    ref = ModelRef(str(tiny_model_dir))
    batched = HFGenerator().generate(ref, PROMPTS, gen_cfg(5))
    single = HFGenerator().generate(ref, PROMPTS, gen_cfg(1))
    assert batched == single
    assert len(batched) == len(PROMPTS) and all(isinstance(c, str) for c in batched)


def test_chat_template_wraps_the_prompt(tiny_model_dir):
    tokenizer = load_tokenizer(ModelRef(str(tiny_model_dir)))
    text = chat_prompt(tokenizer, "Hello", system="Be brief.")
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"


def test_shared_prefix_cache_keeps_greedy_output_and_is_used(tiny_model_dir, monkeypatch):
    """The prompts' shared opening (template + system turn) runs once: fp32 greedy output equals whole-prompt
    runs at every batch size, and the prefix really is served from the cache."""
    from frpo_bench.models import shared_prefix
    ref = ModelRef(str(tiny_model_dir))
    on = from_dict(GenerationConfig, {"dtype": "float32", "max_new_tokens": 6, "batch_size": 2,
                                      "system_prompt": "You are a careful assistant."}, "generation")
    off = from_dict(GenerationConfig, {**{"dtype": "float32", "max_new_tokens": 6, "batch_size": 5,
                                          "system_prompt": "You are a careful assistant."}, "prefix_cache": False},
                    "generation")
    lengths = []
    real = shared_prefix.prefix_cache
    monkeypatch.setattr("frpo_bench.models.shared_prefix.prefix_cache",
                        lambda model, ids: lengths.append(len(ids)) or real(model, ids))
    assert HFGenerator().generate(ref, PROMPTS, on) == HFGenerator().generate(ref, PROMPTS, off)
    tokenizer = load_tokenizer(ref)
    opening = tokenizer(chat_prompt(tokenizer, "", "You are a careful assistant."), add_special_tokens=False)["input_ids"]
    assert lengths and lengths[0] >= shared_prefix.MIN_SHARED and lengths[0] <= len(opening)
    assert "prefix_cache" not in on.key_fields()  # transport only


def test_shared_length_leaves_every_prompt_a_token_of_its_own():
    from frpo_bench.models.shared_prefix import batch_inputs, shared_length
    assert shared_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert shared_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter one keeps its last token
    assert shared_length([[7, 8]]) == 1 and shared_length([]) == 0
    ids, mask = batch_inputs([1, 2], [[5], [6, 7, 8]], pad_id=0, device="cpu")
    assert ids.tolist() == [[1, 2, 0, 0, 5], [1, 2, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]


def test_opening_is_shared_only_when_long_enough_and_cached_for_every_model(tiny_model_dir):
    from frpo_bench.models.loading import load_model
    from frpo_bench.models.shared_prefix import MIN_SHARED, opening
    model = load_model(ModelRef(str(tiny_model_dir))).eval()
    long = list(range(1, MIN_SHARED + 3))
    head, caches = opening([model, model], [long + [50], long + [60, 61]])
    assert head == long and len(caches) == 2 and all(c.get_seq_length() == len(long) for c in caches)
    assert opening([model], [long[:MIN_SHARED - 1] + [50], long[:MIN_SHARED - 1] + [60]]) == ([], [None])
    assert opening([model], [long + [50], long + [60]], enabled=False) == ([], [None])


def test_prompts_split_into_the_fewest_even_batches():
    from frpo_bench.models.generate_hf import even_batch_size
    assert even_batch_size(100, 48) == 34 and even_batch_size(96, 48) == 48 and even_batch_size(10, 48) == 10
    assert even_batch_size(0, 16) == 1 and even_batch_size(17, 16) == 9


def test_generation_key_names_the_fp32_adapter_merge_where_it_differs_from_the_compute_dtype():
    bf16 = from_dict(GenerationConfig, {"dtype": "bfloat16"}, "generation")
    assert bf16.key_fields()["adapter_merge"] == "float32"
    assert "adapter_merge" not in gen_cfg(4).key_fields()  # fp32: merged in fp32 as always, keys unchanged
    assert "adapter_merge" not in from_dict(GenerationConfig, {"dtype": "bfloat16", "backend": "vllm"},
                                            "generation").key_fields()  # vLLM serves adapters unmerged


def test_vllm_adapters_enter_the_key_only_where_they_change_the_arithmetic():
    served = from_dict(GenerationConfig, {"backend": "vllm"}, "generation").key_fields()
    merged = from_dict(GenerationConfig, {"backend": "vllm", "vllm_adapters": "merged"}, "generation").key_fields()
    hf = from_dict(GenerationConfig, {"backend": "hf", "vllm_adapters": "merged"}, "generation").key_fields()
    assert "vllm_adapters" not in served and merged["vllm_adapters"] == "merged"  # today's keys stay as they were
    assert hf == from_dict(GenerationConfig, {"backend": "hf"}, "generation").key_fields()
    with pytest.raises(ConfigError, match="vllm_adapters"):
        from_dict(GenerationConfig, {"backend": "vllm", "vllm_adapters": "fused"}, "generation")


def test_vllm_block_size_is_transport_and_checked():
    """The KV cache block decides what the prefix cache reuses, not what is computed: no key changes."""
    plain = from_dict(GenerationConfig, {"backend": "vllm"}, "generation").key_fields()
    assert from_dict(GenerationConfig, {"backend": "vllm", "vllm_block_size": 64}, "generation").key_fields() == plain
    with pytest.raises(ConfigError, match="vllm_block_size.*multiple of 16"):
        from_dict(GenerationConfig, {"backend": "vllm", "vllm_block_size": 24}, "generation")


def test_the_runner_groups_each_models_prompt_sets_for_the_resident_engine_only():
    """The demo on vLLM: every generate stage in a group of its model and settings (a final model's four sets, a
    trajectory point's two); on transformers, whose outputs depend on what is padded together, none."""
    from frpo_bench.config import load_recipe
    from frpo_bench.engine import stages as kinds
    from frpo_bench.engine.plan import build_plan
    _, stages = build_plan(load_recipe("demo", ["generation.backend=vllm"])[0])
    generate = [s for s in stages if s.kind == "generate"]
    batches = kinds.GenerationBatches.of(stages)
    groups = list(batches.groups.values())
    assert sorted(s.key for g in groups for s in g) == sorted(s.key for s in generate)
    assert sorted(len(g) for g in groups) == [2] * 8 + [4] * 10
    for group in groups:
        assert len({s.parents[0].key for s in group}) == 1 and len({s.payload["seed"] for s in group}) == 1
        assert batches.groups[group[0].key] is group and group[0] is min(group, key=stages.index)
    assert kinds.GenerationBatches.of(build_plan(load_recipe("demo")[0])[1]).groups == {}


def test_a_score_run_on_the_engine_follows_its_models_generations_while_its_weights_are_in_it():
    """GSM8K on the resident engine: each model's lm-eval stage comes straight after that model's generate stages
    (one weight swap per model); other scores after every generation; parents always first."""
    from frpo_bench.config import load_recipe
    from frpo_bench.engine.plan import build_plan
    _, stages = build_plan(load_recipe("demo", ["generation.backend=vllm",
                                                "evaluations.6.options.backend=vllm"])[0])
    position = {s.key: i for i, s in enumerate(stages)}
    assert all(position[p.key] < position[s.key] for s in stages for p in s.parents)
    on_engine = [s for s in stages if s.kind == "score" and s.payload["evaluation"].options.uses_generation_engine()]
    assert len(on_engine) == 10
    for score in on_engine:
        before = stages[position[score.key] - 1]
        assert before.kind == "generate" and before.parents[0].key == score.parents[0].key
    last_generate = max(i for i, s in enumerate(stages) if s.kind == "generate")
    assert all(position[s.key] > last_generate for s in stages if s.kind == "score" and s not in on_engine)
