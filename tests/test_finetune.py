"""Attack training really trains: weights move; LoRA leaves the base untouched and saves an adapter."""
import pytest
import torch
from safetensors.torch import load_file

from frpo_bench.models import ModelRef
from frpo_bench.models.loading import load_model, load_tokenizer
from frpo_bench.training.batches import tokenize_pairs
from frpo_bench.training.options import FinetuneConfig
from frpo_bench.training.sft import finetune
from frpo_bench.typed import from_dict


def attack_cfg(**extra):
    raw = {"data": [{"dataset": "demo_compliance", "split": "train", "n": 8}], "steps": 3,
           "batch_size": 4, "micro_batch_size": 2, "max_length": 64, "bf16": False, **extra}
    return from_dict(FinetuneConfig, raw)


def weights(path):
    return load_file(str(path / "model.safetensors"))


def test_lora_attack_moves_adapter_and_leaves_base_alone(tiny_model_dir, tmp_path):
    before = {k: v.clone() for k, v in weights(tiny_model_dir).items()}
    ref = finetune(ModelRef(str(tiny_model_dir)), tmp_path / "out", attack_cfg(lora={"r": 4, "alpha": 8}), lr=1e-2,
                   seed=0, report=lambda m: None)
    assert ref.adapter == str(tmp_path / "out") and ref.path == str(tiny_model_dir)
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    assert not (tmp_path / "out" / "model.safetensors").exists()
    after = weights(tiny_model_dir)
    assert all(torch.equal(before[k], after[k]) for k in before)
    adapter = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means it trained
    # the loaded attacked model differs from the base in its outputs
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        base_out = load_model(ModelRef(str(tiny_model_dir)))(ids).logits
        attacked_out = load_model(ref)(ids).logits
    assert not torch.allclose(base_out, attacked_out)


def test_full_attack_moves_every_trainable_weight(tiny_model_dir, tmp_path):
    ref = finetune(ModelRef(str(tiny_model_dir)), tmp_path / "out", attack_cfg(), lr=1e-3, seed=0, report=lambda m: None)
    assert ref.adapter is None and ref.path == str(tmp_path / "out")
    before, after = weights(tiny_model_dir), weights(tmp_path / "out")
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == [], unchanged
    assert (tmp_path / "out" / "train_log.json").is_file()


def test_merge_gives_plain_full_weights(tiny_model_dir, tmp_path):
    ref = finetune(ModelRef(str(tiny_model_dir)), tmp_path / "out", attack_cfg(lora={"r": 4, "alpha": 8}), lr=1e-2,
                   seed=0, merge=True, report=lambda m: None)
    assert ref.adapter is None and not (tmp_path / "out" / "adapter_config.json").exists()
    assert set(weights(tmp_path / "out")) == set(weights(tiny_model_dir))


def test_prompt_tokens_are_masked(tiny_model_dir):
    tokenizer = load_tokenizer(ModelRef(str(tiny_model_dir)), padding_side="right")
    (row,) = tokenize_pairs(tokenizer, [{"prompt": "How many legs does a spider have?", "response": "Eight."}], 256)
    supervised = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tokenizer.decode(supervised).startswith("Eight.")
    assert row["labels"][0] == -100


def test_seed_reproduces_training(tiny_model_dir, tmp_path):
    runs = [finetune(ModelRef(str(tiny_model_dir)), tmp_path / f"o{i}", attack_cfg(), lr=1e-3, seed=7,
                     report=lambda m: None) for i in range(2)]
    a, b = weights(tmp_path / "o0"), weights(tmp_path / "o1")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].adapter is None


def test_attacks_start_from_an_adapter_model(tiny_model_dir, tmp_path):
    """A defended model that is base + LoRA is merged, then fully fine-tuned or given a new LoRA."""
    lora = finetune(ModelRef(str(tiny_model_dir)), tmp_path / "defended", attack_cfg(lora={"r": 4, "alpha": 8}),
                    lr=1e-2, seed=0, report=lambda m: None)
    finetune(lora, tmp_path / "full", attack_cfg(), lr=1e-3, seed=0, report=lambda m: None)
    merged = load_model(lora).merge_and_unload().state_dict()
    after = weights(tmp_path / "full")
    assert all(not torch.equal(merged[k], after[k]) for k in after if k in merged and "embed" not in k)
    again = finetune(lora, tmp_path / "lora2", attack_cfg(lora={"r": 4, "alpha": 8}), lr=1e-2, seed=0,
                     report=lambda m: None)
    assert again.path == str(tmp_path / "lora2" / "base") and (tmp_path / "lora2" / "base" / "model.safetensors").is_file()


def test_float32_merge_from_files_equals_peft_bit_for_bit(tiny_model_dir, tmp_path):
    """load_merged adds a plain LoRA's B @ A * scale to the weights itself (no peft model built): the same
    bits as peft's merge_and_unload; an adapter that is more than W + BA (here on the embeddings) goes to peft."""
    from frpo_bench.models.loading import load_merged
    ref = finetune(ModelRef(str(tiny_model_dir)), tmp_path / "out", attack_cfg(lora={"r": 4, "alpha": 8}), lr=1e-2,
                   seed=0, report=lambda m: None)
    by_peft = load_model(ref).merge_and_unload().state_dict()
    by_files = load_merged(ref, "float32").state_dict()
    base = weights(tiny_model_dir)
    assert by_files.keys() == by_peft.keys()
    assert all(torch.equal(by_files[k], by_peft[k]) for k in by_peft)
    assert not torch.equal(by_files["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    embedded = finetune(ModelRef(str(tiny_model_dir)), tmp_path / "emb", attack_cfg(
        lora={"r": 4, "alpha": 8, "target_modules": ["embed_tokens", "q_proj"]}), lr=1e-2, seed=0, report=lambda m: None)
    from frpo_bench.models.adapter_merge import lora_factors
    with pytest.raises(ValueError, match="only plain LoRA"):
        lora_factors(embedded.adapter)
    by_peft = load_model(embedded).merge_and_unload().state_dict()
    merged = load_merged(embedded, "float32").state_dict()
    assert all(torch.equal(merged[k], by_peft[k]) for k in by_peft)
    assert not torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])


def test_warmup_ratio_is_a_share_of_the_steps(tiny_model_dir, tmp_path):
    """transformers 5 reads warmup_steps < 1 as a ratio: 0.5 of 4 steps warms up over the first 2."""
    finetune(ModelRef(str(tiny_model_dir)), tmp_path / "out",
             attack_cfg(steps=4, warmup_ratio=0.5, lr_scheduler="constant_with_warmup"), lr=1e-3, seed=0,
             report=lambda m: None)
    import json
    rates = [h["learning_rate"] for h in json.loads((tmp_path / "out" / "train_log.json").read_text())["history"]
             if "learning_rate" in h]
    assert rates[:4] == pytest.approx([0.0, 5e-4, 1e-3, 1e-3])  # logged: the rate each step used


def test_same_seed_gives_the_same_adapter_bytes(tiny_model_dir, tmp_path):
    """A LoRA's initial weights come from the stage's seed: two runs in fresh processes, one file."""
    import hashlib
    import subprocess
    import sys
    code = ("import sys; from pathlib import Path; from frpo_bench.models import ModelRef; "
            "from frpo_bench.typed import from_dict; from frpo_bench.training.options import FinetuneConfig; "
            "from frpo_bench.training.sft import finetune; "
            "cfg = from_dict(FinetuneConfig, {'data': [{'dataset': 'demo_compliance', 'split': 'train', 'n': 8}], "
            "'steps': 2, 'batch_size': 4, 'max_length': 64, 'lora': {'r': 4, 'alpha': 8}}); "
            "finetune(ModelRef(sys.argv[1]), Path(sys.argv[2]), cfg, lr=1e-3, seed=3, report=lambda m: None)")
    digests = []
    for run in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tiny_model_dir), str(tmp_path / run)], check=True)
        digests.append(hashlib.sha256((tmp_path / run / "adapter_model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_every_optimisation_setting_reaches_the_trainer(tmp_path):
    from frpo_bench.training.sft import training_arguments
    cfg = attack_cfg(weight_decay=0.1, lr_scheduler="cosine", warmup_ratio=0.05, max_grad_norm=0.5)
    args = training_arguments(cfg, tmp_path, lr=3e-5, seed=7)
    assert (args.weight_decay, args.lr_scheduler_type.value, args.max_grad_norm, args.learning_rate) == (0.1, "cosine", 0.5, 3e-5)
    assert (args.max_steps, args.per_device_train_batch_size, args.gradient_accumulation_steps, args.seed) == (3, 2, 2, 7)
    assert args.get_warmup_steps(args.max_steps) == 1  # 5% of 3 steps, rounded up
