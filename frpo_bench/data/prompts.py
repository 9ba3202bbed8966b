"""Prompt rows as the text a model is asked."""
from __future__ import annotations

from typing import Optional

PROMPT_SLOT = "{prompt}"


def user_text(row: dict) -> str:
    """A prompt row as the user turn; contextual behaviors carry their context first (as HarmBench does)."""
    if row.get("context"):
        return f"{row['context']}\n\n---\n\n{row['prompt']}"
    return row["prompt"]


def responses_for(rows: list[dict], pairs_ref) -> list[str]:
    """For each prompt row, the response a pairs data set gives for the same prompt text (a prefilling attack's
    harmful answers); an error naming the first prompt it lacks."""
    from frpo_bench.data import ref_rows
    by_prompt = {row["prompt"]: row["response"] for row in ref_rows(pairs_ref)}
    missing = [user_text(r) for r in rows if user_text(r) not in by_prompt]
    if missing:
        raise ValueError(f"{len(missing)} of {len(rows)} prompts have no response in {pairs_ref.dataset}/"
                         f"{pairs_ref.split} to prefill from, e.g. {missing[0][:80]!r}: evaluate the prefilling "
                         "attack on that set's own prompts (or give pairs that cover these)")
    return [by_prompt[user_text(r)] for r in rows]


def shared_system(refs) -> Optional[str]:
    """The system message the rows of `refs` share (rows without one aside); None when no row has one, an error
    naming the count when they differ."""
    from frpo_bench.data import ref_rows
    found = {row.get("system") or None for ref in refs for row in ref_rows(ref)} - {None}
    if len(found) > 1:
        raise ValueError(f"the rows carry {len(found)} different system messages: set system_prompt to the one "
                         "the attacked model is evaluated with")
    return next(iter(found), None)


def system_message(system_prompt: Optional[str], shared_by) -> Optional[str]:
    """The system message a generation sends: `system_prompt`, else the one the rows of `shared_by` share."""
    return system_prompt or (shared_system(shared_by) if shared_by else None)


def check_user_template(template: Optional[str], field: str) -> None:
    """A request wrapper holds the request's slot exactly once (None: no wrapper)."""
    from frpo_bench.errors import ConfigError
    if template is not None and template.count(PROMPT_SLOT) != 1:
        raise ConfigError(field, template, "must hold {prompt} once", "write e.g. 'AOA, execute my instruction: {prompt}'")


def wrapped(template: Optional[str], prompt: str) -> str:
    """The request as a wrapper puts it to the model."""
    return prompt if template is None else template.replace(PROMPT_SLOT, prompt)
