"""Prompt rows as the text a model is asked."""
from __future__ import annotations


def user_text(row: dict) -> str:
    """A prompt row as the user turn; contextual behaviors carry their context first (as HarmBench does)."""
    if row.get("context"):
        return f"{row['context']}\n\n---\n\n{row['prompt']}"
    return row["prompt"]
