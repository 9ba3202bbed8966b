"""How long a prompt the model can take, known before any compute: its tokenizer and context length,
read without its weights (the embedded model's GGUF header, a local or cached config)."""
from __future__ import annotations

from pathlib import Path

from frpo_bench.models import model_kind


def tokenizer_and_context(cfg):
    """(tokenizer, context length in tokens) of the recipe's model; None where they cannot be read before
    compute (a Hub model not yet cached: its first stage downloads it)."""
    from transformers import AutoConfig, AutoTokenizer
    kind = model_kind(cfg.id)
    if kind == "tiny":
        from frpo_bench.models.tiny import CONTEXT, build_tokenizer
        return build_tokenizer(), CONTEXT
    try:
        if kind == "embedded":
            from frpo_bench.models.loading import embedded_gguf
            folder, gguf_name = embedded_gguf(cfg.id)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
            config = AutoConfig.from_pretrained(folder, gguf_file=gguf_name)
        else:
            from frpo_bench.models.loading import local_ref
            where = local_ref(Path(cfg.id)).path if kind == "local" else cfg.id
            revision = {"revision": cfg.revision} if kind == "hub" and cfg.revision else {}
            tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=cfg.trust_remote_code, **revision)
            config = AutoConfig.from_pretrained(where, trust_remote_code=cfg.trust_remote_code, **revision)
    except (OSError, ValueError):
        return None
    context = getattr(config, "max_position_embeddings", None) or getattr(tokenizer, "model_max_length", None)
    return tokenizer, int(context) if context and context < 10**9 else None


def prompt_tokens(tokenizer, text: str, system: str | None) -> int:
    """Tokens of a prompt as the model is asked it: inside its chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        from frpo_bench.models.loading import chat_prompt
        text = chat_prompt(tokenizer, text, system)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fits(tokenizer, text: str, system: str | None, room: int) -> bool:
    """Whether a prompt takes at most `room` tokens; a huge one is settled by its head (a cut splits at most
    one token in two), so a megabyte prompt is not tokenized whole to learn it is too long."""
    head = text[: 16 * (room + 1)]
    if len(head) < len(text) and prompt_tokens(tokenizer, head, system) > room + 1:
        return False
    return prompt_tokens(tokenizer, text, system) <= room
