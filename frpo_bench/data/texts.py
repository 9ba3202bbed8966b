"""What every dataset row a model reads must be: text, UTF-8, of a sane length."""
from __future__ import annotations

from frpo_bench.errors import ConfigError

MAX_TEXT_CHARS = 1_000_000  # a prompt or response longer than this is damage, not data
TEXT_FIELDS = ("prompt", "response", "system", "context")


def check_texts(rows: list[dict], name: str) -> None:
    """Every text a model will read must be text: a str, encodable as UTF-8 (no lone surrogate, which a JSON
    escape can make), and of a sane length; checked when rows are read, before any compute."""
    for number, row in enumerate(rows, 1):
        for field in TEXT_FIELDS:
            value = row.get(field)
            if value is None:
                continue
            problem = None
            if not isinstance(value, str):
                problem = f"is a {type(value).__name__}, not text"
            elif len(value) > MAX_TEXT_CHARS:
                problem = f"holds {len(value):,} characters, over the limit of {MAX_TEXT_CHARS:,}"
            else:
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as err:
                    problem = f"holds a lone surrogate (U+{ord(value[err.start]):04X}), which is not text"
            if problem:
                raise ConfigError(f"dataset {name}", f"row {number}, {field}", problem,
                                  "fix, shorten or drop that row (a damaged copy of a published set: replace it with its own files)")
