"""The HF backend: chat template applied, order kept, batching does not change greedy output (fp32)."""
from frpo_bench.config import GenerationConfig
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
