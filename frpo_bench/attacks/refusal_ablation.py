"""Refusal-direction ablation (Arditi et al. 2024, "Refusal in Language Models Is Mediated by a Single
Direction"): a training-free attack.

Candidate directions are the differences of mean residual activations between harmful and harmless
instructions, at the input of every layer and every post-instruction token (the chat template's tokens after
the user's text). The paper's selection rule picks one on held-out prompts: among candidates below 80% of
the depth whose ablation keeps the next-token distribution on harmless prompts close (KL < 0.1) and whose
addition makes harmless prompts refused (induce score > 0), the one whose ablation lowers the harmful
prompts' refusal score most. That direction is then projected out of every weight that writes to the
residual stream (the embedding, each attention output and MLP output projection), so the attacked model is an
ordinary stored model. A tied output embedding is untied first and keeps its original values: projecting the
unembedding is not part of the method.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from frpo_bench.attacks.base import AttackBase
from frpo_bench.data.ref import DataRef
from frpo_bench.errors import ConfigError
from frpo_bench.models import ModelRef
from frpo_bench.models.precision import DTYPES, DtypeOption
from frpo_bench.typed import Options, opt
from frpo_bench.work import PROMPT_TOKENS, InferenceMemory, Shape, Work
from frpo_bench.work import Forward as ForwardPass

WRITERS = ("o_proj", "down_proj")  # the linear maps of a decoder layer whose output is added to the residual

ABLATION_LAYERS = 32  # decoder layers, for the estimate: barely grow with size below ~10B (SmolLM2-135M 30)
ABLATION_POSITIONS = 5  # post-instruction tokens of a chat template (SmolLM2's 5)


@dataclass
class RefusalAblationOptions(DtypeOption, Options):
    harmful: DataRef = opt(help="harmful instructions for the mean activations (the paper: 128)")
    harmless: DataRef = opt(help="harmless instructions for the mean activations (the paper: 128)")
    harmful_val: DataRef = opt(help="held-out harmful instructions the selection rule scores (the paper: 32)")
    harmless_val: DataRef = opt(help="held-out harmless instructions the selection rule scores (the paper: 32)")
    max_layer_share: float = opt(0.8, help="candidates only from layers below this share of the depth (the paper: 0.8)")
    kl_threshold: float = opt(0.1, help="a candidate whose ablation moves the next-token distribution on harmless "
                                        "prompts by this KL or more is dropped (the paper: 0.1)")
    refusal_tokens: list[str] = opt(["I", "As"], help="first tokens of a refusal; the refusal score is the log-odds "
                                                       "of the next token being one of them (the paper: I, As)")
    layer: Optional[int] = opt(None, omit_if_default=True, help="skip the selection: take the direction at this layer "
                                                                "(with position)")
    position: Optional[int] = opt(None, omit_if_default=True, help="with layer: the post-instruction token, counted "
                                                                   "from the end (-1: the last token of the template)")
    dtype: str = opt("float32", help=f"compute dtype of the means and the selection, one of {DTYPES} (auto: the "
                                     "faster here); the weights are orthogonalized in float32 either way")
    batch_size: int = opt(32, help="prompts per forward pass (transport only)")

    def validate(self, path: str) -> None:
        self.check_dtype(path)
        if not 0 < self.max_layer_share <= 1:
            raise ConfigError(f"{path}.max_layer_share", self.max_layer_share, "must be in (0, 1]", "use e.g. 0.8")
        if not self.kl_threshold > 0:
            raise ConfigError(f"{path}.kl_threshold", self.kl_threshold, "must be positive", "use e.g. 0.1")
        if not self.refusal_tokens or not all(t for t in self.refusal_tokens):
            raise ConfigError(f"{path}.refusal_tokens", self.refusal_tokens, "must list non-empty strings",
                              "use e.g. [I, As]")
        if (self.layer is None) != (self.position is None):
            raise ConfigError(f"{path}.layer", self.layer, "and position go together",
                              "give both (e.g. layer: 12, position: -1), or neither to select by the paper's rule")
        if self.layer is not None and (self.layer < 0 or self.position >= 0):
            raise ConfigError(f"{path}.position", self.position, "must be negative (from the end), with layer >= 0",
                              "use e.g. layer: 12, position: -1")
        if self.batch_size < 1:
            raise ConfigError(f"{path}.batch_size", self.batch_size, "must be positive", "use e.g. 32")

    def key_fields(self) -> dict:
        fields = super().key_fields()
        fields.pop("batch_size")
        return fields

    def data_refs(self) -> list[DataRef]:
        return [self.harmful, self.harmless, self.harmful_val, self.harmless_val]


class RefusalAblationAttack(AttackBase):
    """Refusal-direction ablation: difference of means, the paper's selection rule, weight orthogonalization."""

    Options = RefusalAblationOptions

    @staticmethod
    def work(options, shape: Shape) -> Work:
        """Forwards for the two means, then per candidate (layers under the depth share x positions) one pass over
        both validation sets and, at worst, one induce pass over the harmless one."""
        means = shape.rows(options.harmful) + shape.rows(options.harmless)
        candidates = int(options.max_layer_share * ABLATION_LAYERS) * ABLATION_POSITIONS
        reads = means + candidates * (shape.rows(options.harmful_val) + 2 * shape.rows(options.harmless_val))
        return Work(loads=3, steps=(ForwardPass(PROMPT_TOKENS * reads),), memory=(InferenceMemory(32, PROMPT_TOKENS),))
    trains = False

    def apply(self, model: ModelRef, out: Path, options: RefusalAblationOptions, lr=None, seed: int = 0,
              report=print, checkpoint_steps=(), stop_at=None, warm=None) -> ModelRef:
        import torch
        from safetensors.torch import save_file

        from frpo_bench.models.loading import load_merged, load_tokenizer
        start = time.time()
        tokenizer = load_tokenizer(model, padding_side="left")
        lm = load_merged(model, options.dtype).eval()
        texts = {name: prompt_texts(tokenizer, getattr(options, name))
                 for name in ("harmful", "harmless", "harmful_val", "harmless_val")}
        tail = post_instruction_tokens(tokenizer)
        refusal_ids = sorted({tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in options.refusal_tokens})
        run = Forward(lm, tokenizer, options.batch_size)
        with torch.no_grad():
            means = {k: run.mean_inputs(texts[k], tail) for k in ("harmful", "harmless")}
            directions = difference_of_means(means["harmful"], means["harmless"])  # (layers, tail, width)
            report(f"mean activations at {directions.shape[0]} layers x {tail} post-instruction tokens")
            if options.layer is not None:
                if options.layer >= directions.shape[0] or -options.position > tail:
                    raise ValueError(f"layer {options.layer} / position {options.position} is outside the model's "
                                     f"{directions.shape[0]} layers x {tail} post-instruction tokens")
                chosen = {"layer": options.layer, "position": options.position, "fixed": True}
                candidates = []
            else:
                candidates = score_candidates(run, directions, texts, refusal_ids,
                                              int(options.max_layer_share * directions.shape[0]),
                                              options.kl_threshold, report)
                chosen = choose_direction(candidates, options.kl_threshold)
            direction = directions[chosen["layer"], chosen["position"]].float()
            if options.dtype != "float32":
                del run, lm
                lm = load_merged(model, "float32").eval()
            orthogonalize_writers(lm, direction)
        lm.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        save_file({"direction": direction.contiguous()}, str(Path(out) / "direction.safetensors"))
        record = {**chosen, "norm": float(direction.norm()), "post_instruction_tokens": tail,
                  "refusal_token_ids": refusal_ids, "seconds": time.time() - start, "candidates": candidates,
                  "steps": 0, "tokens": 0}
        (Path(out) / "train_log.json").write_text(json.dumps(record, indent=2))
        report(f"ablated the direction of layer {chosen['layer']}, position {chosen['position']}"
               + {"kl+induce": "", "kl": " (no candidate induced refusal: the lowest bypass under the KL bound)",
                  "none": " (no candidate kept KL under the bound: the lowest bypass of all)"}[chosen.get("filters",
                                                                                                         "kl+induce")])
        return ModelRef(str(out), trust_remote_code=model.trust_remote_code)


def prompt_texts(tokenizer, ref: DataRef) -> list[str]:
    from frpo_bench.data import ref_rows
    from frpo_bench.data.prompts import user_text
    from frpo_bench.models.loading import chat_prompt
    return [chat_prompt(tokenizer, user_text(row)) for row in ref_rows(ref)]


def post_instruction_tokens(tokenizer) -> int:
    """How many tokens the chat template puts after the user's text (end of turn, assistant header)."""
    from frpo_bench.models.loading import chat_prompt
    marker = "\u2063instruction\u2063"
    text = chat_prompt(tokenizer, marker)
    return len(tokenizer(text[text.rindex(marker) + len(marker):], add_special_tokens=False)["input_ids"])


def difference_of_means(harmful, harmless):
    """r = mean(harmful) - mean(harmless), per layer and position."""
    return harmful - harmless


def refusal_score(last_logits, refusal_ids: list[int]):
    """Per prompt, log p / (1 - p) of the next token being a refusal token (p summed over them)."""
    import torch
    logp = torch.log_softmax(last_logits.float(), dim=-1)
    refuse = torch.logsumexp(logp[:, refusal_ids], dim=-1)
    return refuse - torch.log(-torch.expm1(refuse).clamp(max=-1e-12))


def kl_divergence(p_logits, q_logits):
    """KL(p || q) per row, from logits."""
    import torch
    logp, logq = torch.log_softmax(p_logits.float(), -1), torch.log_softmax(q_logits.float(), -1)
    return (logp.exp() * (logp - logq)).sum(-1)


def project_out(matrix, unit, axis: int):
    """`matrix` with the component along `unit` removed from its dimension `axis` (the residual one)."""
    if axis == 0:
        return matrix - unit[:, None] * (unit @ matrix)[None, :]
    return matrix - (matrix @ unit)[:, None] * unit[None, :]


def choose_direction(candidates: list[dict], kl_threshold: float) -> dict:
    """The paper's rule: the lowest bypass score among candidates with induce > 0 and KL below the threshold
    (candidates are already below the layer bound; induce None: not measured, it could not have won). Where none
    passes both, the lowest bypass among those under the KL bound (a small model may not refuse harmless requests
    whatever is added), else among all; `filters` says which rule chose."""
    small_kl = [c for c in candidates if c["kl"] < kl_threshold]
    both = [c for c in small_kl if c["induce"] is not None and c["induce"] > 0]
    filters, pool = ("kl+induce", both) if both else ("kl", small_kl) if small_kl else ("none", candidates)
    best = min(pool, key=lambda c: c["bypass"])
    return {"layer": best["layer"], "position": best["position"], "filters": filters}


def residual_writers(lm) -> list:
    """The embedding and every decoder layer's attention-output and MLP-output projections."""
    import torch
    writers = [m for name, m in lm.named_modules() if isinstance(m, torch.nn.Linear) and name.endswith(WRITERS)]
    layers = lm.config.num_hidden_layers
    if len(writers) != 2 * layers:
        raise ValueError(f"found {len(writers)} residual-writing projections ({'/'.join(WRITERS)}) for {layers} "
                         "layers: this architecture's names are not supported by refusal_ablation")
    return [lm.get_input_embeddings(), *writers]


def orthogonalize_writers(lm, direction) -> None:
    """Project `direction` out of every weight (and bias) that writes to the residual stream, in place."""
    import torch
    unit = direction / direction.norm()
    embedding, output = lm.get_input_embeddings(), lm.get_output_embeddings()
    if output is not None and output.weight is embedding.weight:  # tied: the unembedding keeps its values
        output.weight = torch.nn.Parameter(embedding.weight.detach().clone())
        lm.config.tie_word_embeddings = False
        if getattr(lm.config, "get_text_config", None):
            lm.config.get_text_config().tie_word_embeddings = False
    embedding.weight.data = project_out(embedding.weight.data, unit, axis=1)
    for module in residual_writers(lm)[1:]:
        module.weight.data = project_out(module.weight.data, unit, axis=0)
        if module.bias is not None:
            module.bias.data = module.bias.data - (module.bias.data @ unit) * unit


@contextmanager
def hooks(handles: list):
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class Forward:
    """Batched forward passes of one model over chat-templated prompts, left-padded so that the last tokens of
    every row are the template's post-instruction tokens."""

    def __init__(self, lm, tokenizer, batch_size: int):
        self.lm, self.tokenizer, self.batch_size = lm, tokenizer, batch_size

    def batches(self, texts: list[str]):
        for b in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[b: b + self.batch_size], return_tensors="pt", padding=True,
                                 add_special_tokens=False)
            mask = enc["attention_mask"].to(self.lm.device)
            # positions count from each row's first real token, as generation numbers them (not from the padding)
            yield {"input_ids": enc["input_ids"].to(self.lm.device), "attention_mask": mask,
                   "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}

    def mean_inputs(self, texts: list[str], tail: int):
        """Mean over prompts of each layer's input at the last `tail` positions: (layers, tail, width)."""
        import torch
        total = None
        for batch in self.batches(texts):
            states = self.lm.base_model(**batch, output_hidden_states=True).hidden_states
            layer_inputs = torch.stack(states[: self.lm.config.num_hidden_layers])[:, :, -tail:, :].float().sum(1)
            total = layer_inputs if total is None else total + layer_inputs
        return total / len(texts)

    def last_logits(self, texts: list[str]):
        """Next-token logits after each prompt. The prompts' shared opening (the template's system turn) runs
        once per call, under whatever hooks are active, and every batch starts from its cache: about half of
        SmolLM2's prompt tokens."""
        import torch

        from frpo_bench.models.shared_prefix import opening, repeated
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        head, (cache,) = opening([self.lm], ids)
        pad, out = self.tokenizer.pad_token_id, []
        for b in range(0, len(ids), self.batch_size):
            rests = [row[len(head):] for row in ids[b: b + self.batch_size]]
            width = max(len(r) for r in rests)
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests], device=self.lm.device)
            mask = torch.tensor([[1] * len(head) + [0] * (width - len(r)) + [1] * len(r) for r in rests],
                                device=self.lm.device)
            past = {"past_key_values": repeated(cache, len(rests))} if cache is not None else {}
            logits = self.lm(input_ids=input_ids, attention_mask=mask, use_cache=bool(past), logits_to_keep=1,
                             position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, len(head):], **past).logits
            out.append(logits[:, -1].float())
        return torch.cat(out)

    def ablating(self, direction):
        """Within it, the direction is projected out of every residual write (the same map as the
        orthogonalized weights)."""
        unit = (direction.float() / direction.float().norm()).to(self.lm.dtype)

        def hook(module, args, output):
            return output - (output @ unit)[..., None] * unit

        return hooks([m.register_forward_hook(hook) for m in residual_writers(self.lm)])

    def adding(self, direction, layer: int):
        """Within it, the direction is added to the input of `layer` at every position."""
        direction = direction.to(self.lm.dtype)

        def hook(module, args, kwargs):
            if args:
                return (args[0] + direction, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + direction}

        decoder_layer = self.lm.base_model.layers[layer]
        return hooks([decoder_layer.register_forward_pre_hook(hook, with_kwargs=True)])


def score_candidates(run: Forward, directions, texts: dict, refusal_ids: list[int], layers: int,
                     kl_threshold: float, report) -> list[dict]:
    """Bypass (harmful val, direction ablated), induce (harmless val, direction added at its layer) and KL
    (harmless val, ablated against plain) of every candidate below layer `layers`. A candidate with no length is
    skipped: at the first layer's input the template's tokens are the same embeddings whatever the instruction.
    The induce pass is skipped (induce None) where it cannot change the choice: a candidate over the KL
    threshold, or one whose bypass is no lower than that of a candidate already passing both filters."""
    base_harmless = run.last_logits(texts["harmless_val"])
    tail, candidates, start = directions.shape[1], [], time.time()
    floor, best = 1e-6 * float(directions.norm(dim=-1).max()), float("inf")
    for layer in range(layers):
        for position in range(-tail, 0):
            r = directions[layer, position]
            if float(r.norm()) <= floor:
                continue
            with run.ablating(r):  # both sets in one pass
                logits = run.last_logits(texts["harmful_val"] + texts["harmless_val"])
            split = len(texts["harmful_val"])
            bypass = refusal_score(logits[:split], refusal_ids).mean()
            kl = kl_divergence(base_harmless, logits[split:]).mean()
            candidate = {"layer": layer, "position": position, "bypass": float(bypass), "induce": None, "kl": float(kl)}
            if candidate["kl"] < kl_threshold and candidate["bypass"] < best:
                with run.adding(r, layer):
                    candidate["induce"] = float(refusal_score(run.last_logits(texts["harmless_val"]), refusal_ids).mean())
                if candidate["induce"] > 0:
                    best = candidate["bypass"]
            candidates.append(candidate)
        elapsed = time.time() - start
        report(f"direction candidates: layer {layer + 1}/{layers} ({elapsed:.0f}s, "
               f"ETA {elapsed / (layer + 1) * (layers - layer - 1):.0f}s)")
    if not candidates:
        raise ValueError(f"no candidate direction below layer {layers}: harmful and harmless means are equal there "
                         "(raise max_layer_share)")
    return candidates
