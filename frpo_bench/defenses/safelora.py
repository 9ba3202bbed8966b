"""SafeLoRA (Hsu et al., NeurIPS 2024): a repair after the attack, with no training.

The alignment matrix of each adapted weight is V = W_aligned - W_base (the defended model minus the model
before alignment), and its projection C = V V^T / ||V||_F (upstream's normalisation: by the Frobenius norm,
not an orthogonal projector). For each update dW the attack made to that weight (B A times LoRA's scale for an
adapter; W_attacked - W_aligned for a full-weight attack), the similarity is cos(C dW, dW), flattened. The
updates least aligned with safety are replaced by C dW: the `num_layers` lowest (upstream's default selection,
10) or those at or under `threshold` (0.5). For an adapter, B becomes C B (so B A becomes C B A); the other
layers are left bit for bit. The authors define it for LoRA; a full-weight attack's dense updates are repaired by
the same rule here (W = W_aligned + C dW), which they did not evaluate.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from frpo_bench.defenses.base import DefenseBase
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.models.adapter_merge import lora_factors
from frpo_bench.typed import Options, opt

SELECTIONS = ("number", "threshold")


@dataclass
class SafeLoRAOptions(Options):
    select: str = opt("number", help="which updates are projected: number (the num_layers least similar; "
                                     "upstream's default) or threshold (every one with similarity <= threshold)")
    num_layers: int = opt(10, help="with select: number, how many updates are projected (upstream: 10)")
    threshold: float = opt(0.5, help="with select: threshold, the similarity at or under which an update is "
                                     "projected (upstream: 0.5)")
    base_model: Optional[str] = opt(None, help="the model before alignment that V is measured from (a Hub id or "
                                               "directory, e.g. mistralai/Mistral-7B-v0.1 for Mistral-7B-Instruct); "
                                               "null: the recipe's model before its `align` stage")
    modules: Optional[list[str]] = opt(None, help="weights (by name ending) a full-weight attack's updates are "
                                                  "repaired in; null: every linear weight of the decoder layers (an "
                                                  "adapter: every layer it adapts)")

    def validate(self, path: str) -> None:
        if self.select not in SELECTIONS:
            raise ConfigError(f"{path}.select", self.select, "is not a selection", f"use one of {SELECTIONS}")
        if self.num_layers < 1:
            raise ConfigError(f"{path}.num_layers", self.num_layers, "must be positive", "use e.g. 10")
        if not -1 <= self.threshold <= 1:
            raise ConfigError(f"{path}.threshold", self.threshold, "is not a cosine", "use a value in [-1, 1], e.g. 0.5")


def projected(aligned, base, update):
    """C dW with C = V V^T / ||V||_F, V = W_aligned - W_base, computed as V (V^T dW) / ||V||_F: C itself is
    [out, out] (a 14336-wide MLP weight of a 7B model: 0.8 GB in fp32), never formed."""
    v = aligned.float() - base.float()
    return v @ (v.T @ update.float()) / v.norm()


def similarity(update, projection) -> float:
    """cos(C dW, dW) over the flattened matrices."""
    import torch
    return float(torch.nn.functional.cosine_similarity(projection.flatten(), update.flatten(), dim=0))


def chosen(similarities: dict[str, float], options: SafeLoRAOptions) -> set[str]:
    """The updates to project: the num_layers least similar, or those at or under the threshold."""
    if options.select == "threshold":
        return {name for name, cos in similarities.items() if cos <= options.threshold}
    return set(sorted(similarities, key=similarities.get)[: options.num_layers])


def state_of(ref: ModelRef) -> dict:
    """The full fp32 weights of a model (an adapter merged in)."""
    from frpo_bench.models.loading import load_merged
    return {k: v.detach() for k, v in load_merged(ref, "float32").state_dict().items()}


class SafeLoRADefense(DefenseBase):
    """SafeLoRA: after the attack, the updates least aligned with safety projected onto the alignment matrix."""

    Options = SafeLoRAOptions
    identity = True  # nothing before the attack: the defended model is the start
    repairs = True

    def apply(self, model: ModelRef, out: Path, options: SafeLoRAOptions, seed: int, report=print) -> ModelRef:
        return model

    def repair(self, attacked: ModelRef, defended: ModelRef, base: ModelRef, out: Path, options: SafeLoRAOptions,
               report=print) -> ModelRef:
        aligned, before = state_of(defended), state_of(base)
        if attacked.adapter:
            result, record = self.repair_adapter(attacked, aligned, before, Path(out), options)
        else:
            result, record = self.repair_weights(attacked, aligned, before, Path(out), options)
        (Path(out) / "safelora.json").write_text(json.dumps(record, indent=2))
        report(f"projected {len(record['projected'])} of {len(record['similarity'])} updates onto the alignment matrix")
        return result

    def repair_adapter(self, attacked: ModelRef, aligned: dict, before: dict, out: Path, options) -> tuple:
        from safetensors.torch import load_file, save_file
        source = Path(attacked.adapter)
        a, b, scale = lora_factors(source)
        similarities = {}
        for w in b:
            update = scale * b[w][1].float() @ a[w][1].float()
            similarities[w] = similarity(update, projected(aligned[w], before[w], update))
        picked = chosen(similarities, options)
        tensors = load_file(str(source / "adapter_model.safetensors"))
        for weight in picked:  # C (B A) = (C B) A
            key, value = b[weight]
            tensors[key] = projected(aligned[weight], before[weight], value).to(value.dtype).contiguous()
        for name in source.iterdir():
            if name.is_file() and name.name != "adapter_model.safetensors":
                shutil.copy2(name, out / name.name)
        save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
        record = {"kind": "adapter", "similarity": similarities, "projected": sorted(picked)}
        return ModelRef(attacked.path, adapter=str(out), trust_remote_code=attacked.trust_remote_code), record

    def repair_weights(self, attacked: ModelRef, aligned: dict, before: dict, out: Path, options) -> tuple:
        import torch

        from frpo_bench.models.loading import load_model, load_tokenizer
        lm = load_model(attacked, dtype="float32")
        linear = {f"{name}.weight" for name, m in lm.named_modules()
                  if isinstance(m, torch.nn.Linear) and ".layers." in name}
        wanted = sorted(w for w in linear if options.modules is None
                        or any(w.removesuffix(".weight").endswith(m) for m in options.modules))
        state = lm.state_dict()
        similarities = {}
        for w in wanted:  # one weight's update at a time: a whole model's would double its memory
            update = state[w].float() - aligned[w]
            if update.any():
                similarities[w] = similarity(update, projected(aligned[w], before[w], update))
        picked = chosen(similarities, options)
        with torch.no_grad():
            for weight in picked:
                state[weight].copy_(aligned[weight] + projected(aligned[weight], before[weight],
                                                                state[weight].float() - aligned[weight]))
        lm.save_pretrained(out, safe_serialization=True)
        load_tokenizer(attacked).save_pretrained(out)
        record = {"kind": "full", "similarity": similarities, "projected": sorted(picked)}
        return ModelRef(str(out), trust_remote_code=attacked.trust_remote_code), record
