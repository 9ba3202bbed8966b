"""Prompt rows as the text a model is asked."""
from __future__ import annotations


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
