"""lm-eval's model interface on the run's resident vLLM engine (models/generate_vllm.py): its generate-until
requests (GSM8K, MATH-500) answered by the engine that generated the run's completions, with the attacked
model's weights swapped in, instead of a model or server loaded per cell.

Requests are handled as lm-eval's own vllm backend handles them (lm_eval/models/vllm_causallms.py): contexts
tokenized with the model's tokenizer as lm-eval's HF backend does, left-truncated to leave room for the answer,
the task's stop strings and the end-of-text token passed to the engine and cut again from the decoded text
(lm-eval's `postprocess_generated_text`). A LoRA is merged into its base's weights in float32 first, as the HF
backend's `peft=` does. lm-eval's vllm class itself cannot be used: it imports the distribution named `vllm`,
and it builds its own engine. Log-likelihood requests are refused (use backend hf for such tasks).
"""
from __future__ import annotations

import json
from dataclasses import replace

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs, postprocess_generated_text

from frpo_bench.models import ModelRef


class EngineLM(TemplateLM):
    """lm-eval's LM on the resident engine; `engine`: the run's generation settings (the engine's transport
    settings), `dtype`: the scoring dtype (the engine's, when the engine is to be shared)."""

    def __init__(self, model: ModelRef, engine, dtype: str, report=print):
        super().__init__()
        from frpo_bench.models.generate_vllm import VLLMGenerator, model_length_cap
        from frpo_bench.models.loading import stop_token_ids
        from frpo_bench.models.resident import inference_tokenizer
        from frpo_bench.models.vllm_weights import architecture
        self.model_ref = model
        self.cfg = replace(engine, dtype=dtype, vllm_adapters="merged")
        self.generator = VLLMGenerator(report)
        self.tokenizer = inference_tokenizer(model)
        self.stop_ids = stop_token_ids(model, self.tokenizer)
        self.max_length = model_length_cap(architecture(model.path), self.cfg.vllm_max_model_len)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template=False):
        return self.tokenizer.chat_template if chat_template else None

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        """As lm-eval's HF backend: the tokenizer's own special tokens, none added to a text already opening with
        the beginning-of-sequence token (a chat template's)."""
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos and has_bos_prefix(string, bos):
            special = {"add_special_tokens": False}
        return self.tokenizer.encode(string, **special)

    def _loglikelihood_tokens(self, requests, **kwargs):
        raise NotImplementedError("the resident engine answers generate-until tasks only: set the evaluation's "
                                  "options.backend: hf for log-likelihood tasks")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._loglikelihood_tokens(requests)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """One engine request per distinct set of generation settings (greedy tasks: one for all)."""
        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        answers: list[str] = [""] * len(requests)
        for members in groups.values():
            settings = normalize_gen_kwargs(requests[members[0]].args[1], 256)
            until = handle_stop_sequences(settings.pop("until", None), eos=eos)
            sampling = engine_sampling(settings, until, self.stop_ids)
            room = self.max_length - sampling["max_tokens"]
            contexts = [self.tok_encode(requests[i].args[0])[-room:] for i in members]
            completions = self.generator.token_ids(self.model_ref, contexts, sampling, self.cfg)
            for i, ids in zip(members, completions):
                answers[i] = postprocess_generated_text(self.tokenizer.decode(ids, skip_special_tokens=True), until,
                                                        None)
        return answers


def engine_sampling(settings: dict, until: list[str], stop_ids: list[int]) -> dict:
    """SamplingParams fields for lm-eval's normalised generation settings (pure: tested without vLLM): greedy
    unless the task samples; the stop strings end generation early (the text is cut at them again after)."""
    fields = {"max_tokens": int(settings["max_gen_toks"]), "stop": list(until), "stop_token_ids": list(stop_ids),
              "skip_special_tokens": True, "temperature": float(settings.get("temperature") or 0.0)}
    if settings.get("do_sample") and fields["temperature"] > 0:
        fields.update({k: settings[k] for k in ("top_p", "top_k", "seed") if k in settings})
    else:
        fields["temperature"] = 0.0
    return fields
