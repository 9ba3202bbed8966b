"""Model sources: the tiny test model and the embedded GGUF go through the real from_pretrained path."""
import torch

from frpo_bench.config import ModelConfig
from frpo_bench.models import ModelRef, model_kind
from frpo_bench.models.loading import load_model, load_tokenizer, source_fields


def test_tiny_model_loads_with_from_pretrained(tiny_model_dir):
    model = load_model(ModelRef(str(tiny_model_dir)))
    assert model.config.num_hidden_layers == 2
    tokenizer = load_tokenizer(ModelRef(str(tiny_model_dir)))
    assert tokenizer.chat_template and tokenizer.padding_side == "left"
    assert not any(p.startswith("pytorch_model") for p in (x.name for x in tiny_model_dir.iterdir()))


def test_model_kinds(tiny_model_dir):
    assert model_kind("smollm2-135m-instruct") == "embedded"
    assert model_kind("tiny-llama") == "tiny"
    assert model_kind(str(tiny_model_dir)) == "local"
    assert model_kind("mistralai/Mistral-7B-Instruct-v0.1") == "hub"


def test_local_model_key_tracks_its_weights(tiny_model_dir, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    first = source_fields(ModelConfig(id=str(copy)))
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes())
    import os
    os.utime(copy / "model.safetensors", ns=(1, 1))
    assert source_fields(ModelConfig(id=str(copy))) != first


def test_embedded_model_converts_to_safetensors(embedded_model_dir):
    ref = ModelRef(str(embedded_model_dir))
    assert (embedded_model_dir / "model.safetensors").is_file()
    tokenizer = load_tokenizer(ref)
    model = load_model(ref)
    assert model.config.num_hidden_layers == 30
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])


def test_store_artifact_loads_as_a_checkpoint_by_path(tiny_model_dir, tmp_path):
    """`--checkpoint <store dir>`: an attacked model built in a temporary dir still resolves after the rename."""
    from frpo_bench.engine.store import Store
    from frpo_bench.models.artifact import write_model
    from frpo_bench.models.loading import local_ref
    from frpo_bench.training.options import FinetuneConfig
    from frpo_bench.training.sft import finetune
    from frpo_bench.typed import from_dict
    cfg = from_dict(FinetuneConfig, {"data": [{"dataset": "demo_compliance", "split": "train", "n": 4}],
                                   "steps": 1, "batch_size": 2, "max_length": 128, "lora": {"r": 2, "alpha": 4}})
    store = Store(tmp_path / "store")
    with store.building("attack", "k" * 64, {}) as out:
        write_model(out, finetune(ModelRef(str(tiny_model_dir)), out, cfg, lr=1e-3, seed=0, report=lambda m: None))
    ref = local_ref(store.path("attack", "k" * 64))
    assert ref == ModelRef(str(tiny_model_dir), adapter=str(store.path("attack", "k" * 64)))
    fields = source_fields(ModelConfig(id=str(store.path("attack", "k" * 64))))
    assert fields["adapter"] and fields["weights"]  # the base is part of the identity, not just the adapter
    from safetensors.torch import load_file
    model = load_model(ref)  # loads through the same code as any model: the base, then the stored adapter on it
    saved = load_file(str(store.path("attack", "k" * 64) / "adapter_model.safetensors"))
    loaded = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    assert saved and all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_results_name_a_local_model_without_this_machines_path(tmp_path, tiny_model_dir):
    from frpo_bench.files import MARKER
    from frpo_bench.models import model_label
    assert model_label("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_label("mistralai/Mistral-7B-Instruct-v0.1") == "mistralai/Mistral-7B-Instruct-v0.1"
    assert model_label(str(tiny_model_dir)) == tiny_model_dir.name
    artifact = tmp_path / "store" / "harden" / "79a268e4e5f014b8ce19"
    artifact.mkdir(parents=True)
    for name in ("model.json", "stage.json", MARKER):
        (artifact / name).write_text("{}")
    assert model_label(str(artifact)) == "harden/79a268e4e5f014b8ce19"
    assert str(tmp_path) not in model_label(str(artifact) + "/")


def test_resident_models_are_loaded_once_evicted_oldest_first_and_reloaded_when_rewritten(tiny_model_dir, tmp_path):
    import os

    from frpo_bench.models import ModelRef, resident
    from frpo_bench.models.tiny import build_tiny_model
    resident.release()
    a, b = ModelRef(str(tiny_model_dir)), ModelRef(str(build_tiny_model(tmp_path / "b", seed=1)))
    first = resident.inference_model(a, "float32")
    assert resident.inference_model(a, "float32") is first and not first.training
    cast = resident.inference_model(a, "bfloat16", "eager", merge_dtype="float32")
    assert cast is not first and next(cast.parameters()).dtype == torch.bfloat16
    assert next(first.parameters()).dtype == torch.float32  # the cast is a copy: the resident fp32 one is intact
    assert cast.config._attn_implementation == "eager"
    resident.inference_model(b, "float32")
    assert resident.inference_model(a, "float32") is first  # three fit
    resident.inference_model(b, "bfloat16")  # a fourth: the least recently used (bf16 a) goes
    assert resident.inference_model(a, "bfloat16", "eager", merge_dtype="float32") is not cast
    weights = tmp_path / "b" / "model.safetensors"
    held = resident.inference_model(b, "float32")
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten in place
    assert resident.inference_model(b, "float32") is not held
    resident.release()
    assert not resident._resident


def test_a_tokenizer_is_loaded_once_for_the_same_files_wherever_they_are(tiny_model_dir, tmp_path):
    """Every attacked copy of a model saves the same tokenizer files: one load serves them all; other files, or the
    other padding side, load anew."""
    import json
    import shutil

    from frpo_bench.models import ModelRef
    from frpo_bench.models.resident import TOKENIZER_FILES, inference_tokenizer
    copy, changed = tmp_path / "copy", tmp_path / "changed"
    for folder in (copy, changed):
        folder.mkdir()
        for name in TOKENIZER_FILES:
            if (tiny_model_dir / name).is_file():
                shutil.copy(tiny_model_dir / name, folder / name)
    config = changed / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 77}))
    first = inference_tokenizer(ModelRef(str(tiny_model_dir)))
    assert inference_tokenizer(ModelRef(str(copy))) is first and first.padding_side == "left"
    right = inference_tokenizer(ModelRef(str(copy)), padding_side="right")
    assert right is not first and right.padding_side == "right" and first.padding_side == "left"
    other = inference_tokenizer(ModelRef(str(changed)))
    assert other is not first and other.model_max_length == 77 != first.model_max_length


def test_resident_models_stay_within_the_memory_budget(tiny_model_dir, tmp_path, monkeypatch):
    from frpo_bench.models import ModelRef, resident
    from frpo_bench.models.tiny import build_tiny_model
    resident.release()
    monkeypatch.setattr(resident, "_device_memory", lambda: 1)  # no room: only the model just asked for stays
    a, b = ModelRef(str(tiny_model_dir)), ModelRef(str(build_tiny_model(tmp_path / "b", seed=1)))
    resident.inference_model(a, "float32")
    held = resident.inference_model(b, "float32")
    assert list(resident._resident.values()) == [held]
    resident.release()


def test_a_host_peak_that_cannot_be_reset_is_recorded_as_the_process_peak(monkeypatch):
    """Where the kernel refuses /proc/self/clear_refs, VmHWM is the process's lifetime peak: a stage record
    says so instead of passing it off as the stage's own."""
    import builtins

    from frpo_bench.models import device
    real_open = builtins.open

    def refusing_open(path, *args, **kwargs):
        if str(path) == "/proc/self/clear_refs":
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", refusing_open)
    scope = device.reset_peak_memory()
    assert scope.startswith("process") and "Permission denied" in scope


def test_the_output_head_reads_a_contiguous_input_and_gives_the_same_logits(tiny_model_dir):
    """A frozen head fed a slice of the hidden states (logits_to_keep) took torch's batched path, copying the
    whole weight per row (2.3x slower on SmolLM2); the hook makes the slice contiguous: the same logits up to the
    rounding of another matmul kernel."""
    import torch

    from frpo_bench.models import ModelRef
    from frpo_bench.models.loading import load_model
    lm = load_model(ModelRef(str(tiny_model_dir))).eval().requires_grad_(False)
    seen = []
    lm.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous()))
    ids = torch.randint(0, 50, (3, 7))
    with torch.no_grad():
        kept = lm(input_ids=ids, logits_to_keep=1).logits
        hidden = lm.model(input_ids=ids).last_hidden_state
        sliced = torch.nn.functional.linear(hidden[:, -1:, :], lm.get_output_embeddings().weight)  # torch's own path
    assert seen == [True] and not hidden[:, -1:, :].is_contiguous()
    torch.testing.assert_close(kept, sliced, rtol=1e-5, atol=1e-6)  # one matmul kernel for another: rounding only
