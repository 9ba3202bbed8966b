"""The leaderboard row: its columns, the cell key, types parsed once when a CSV is read, the CSV
form written byte-stably, and the one text-table renderer every printed table uses.

The CSV schema is documented in leaderboards/README.md. Floats print with 4 decimals, booleans
as true/false; reading accepts what a spreadsheet or pandas writes back (True/False, 1/0).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable, TypedDict

from frpo_bench.errors import ConfigError

SCHEMA_VERSION = 1
CELL_KEY = ("base", "defense", "attack", "attack_lr")  # one model variant
ROW_KEY = (*CELL_KEY, "metric")  # one leaderboard row
PROVENANCE = ("evaluator", "judge", "template", "dataset", "split", "dataset_revision")  # what produced a number
COLUMNS = ["schema_version", "recipe", "model", *ROW_KEY, "higher_is_better", "mean", "std_over_seeds", "ci95_low",
           "ci95_high", "n_seeds", "n", *PROVENANCE, "notes", "attack_steps", "attack_tokens", "unit"]
OPTIONAL = ("notes", "attack_steps", "attack_tokens", "unit")  # columns added later: files written before them read as ""
DIVERGED = "attack diverged"  # in a row's notes: its model's weights or losses went non-finite (never a worst case)
BOUNDED_UNITS = ("rate", "score")  # a mean of per-sample values in [0, 1]
FORMULA_START = ("=", "+", "@", "\t", "\r", "-")  # a cell a spreadsheet would run as a formula


class Row(TypedDict):
    schema_version: int
    recipe: str
    model: str
    base: str
    defense: str
    attack: str
    attack_lr: str  # "" for the unattacked cell; the learning rate as %g otherwise
    metric: str
    higher_is_better: bool
    mean: float
    std_over_seeds: float
    ci95_low: float
    ci95_high: float
    n_seeds: int
    n: int
    evaluator: str
    judge: str
    template: str
    dataset: str
    split: str
    dataset_revision: str
    notes: str  # where the defense's settings deliberately differ from its reference ("" if nowhere)
    attack_steps: str  # the attack's optimizer steps (0: it does not train), mean over seeds; "" unattacked
    attack_tokens: str  # the (non-padding) tokens it trained on, mean over seeds; "" unattacked
    unit: str  # rate or score (per-sample values in [0, 1]), nats, reward; "" in files written before the column


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("true", "1", "yes"):
        return True
    if word in ("false", "0", "no"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


def optional_count(text: str):
    """A whole number, or "" where blank (a spreadsheet may write 10 back as 10.0)."""
    return "" if not text.strip() else int(float(text))


PARSERS: dict[str, Callable[[str], Any]] = {"schema_version": int, "higher_is_better": parse_bool, "mean": float,
                                            "std_over_seeds": float, "ci95_low": float, "ci95_high": float,
                                            "n_seeds": int, "n": int, "attack_steps": optional_count,
                                            "attack_tokens": optional_count}


def diverged(row: dict) -> bool:
    return DIVERGED in row.get("notes", "")


def row_key(row: dict) -> tuple:
    return tuple(row[k] for k in ROW_KEY)


def cell_key(row: dict) -> tuple:
    return tuple(row[k] for k in CELL_KEY)


def short_revision(revision) -> str:
    """A commit sha shortened to 12 characters; other revisions (e.g. demo data versions) in full."""
    text = str(revision)
    return text[:12] if len(text) == 40 and all(c in "0123456789abcdef" for c in text) else text


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return inert(str(value))


def inert(text: str) -> str:
    """Text a spreadsheet shows as text: a cell that would start a formula gets a leading apostrophe (the
    OWASP convention); numbers and a lone "-" stay as they are."""
    if text.startswith(FORMULA_START) and text != "-" and not is_number(text):
        return "'" + text
    return text


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_csv(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_value(row[c]) for c in columns])
    return buf.getvalue()


def read_csv(path: Path, field: str = "leaderboard") -> list[Row]:
    """Rows of a leaderboard CSV with their types parsed; a file that is not one is a ConfigError."""
    fix = "give a leaderboard.csv written by frpo-bench"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheet programs save a byte-order mark
            text = fh.read()
        if "\x00" in text:
            raise csv.Error("NUL bytes")
        reader = csv.DictReader(io.StringIO(text))
        raw = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(field, str(path), f"is not a readable CSV ({err.__class__.__name__}: {err})", fix) from None
    if not text.strip():
        raise ConfigError(field, str(path), "is empty", fix)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or []) and c not in OPTIONAL]
    if missing:
        raise ConfigError(field, str(path), f"lacks the columns {missing}", fix)
    return [parse_row({**{c: "" for c in OPTIONAL}, **r}, f"{field} {path}, line {i + 2}") for i, r in enumerate(raw)]


def parse_row(raw: dict, where: str) -> Row:
    row = dict(raw)
    for column, parse in PARSERS.items():
        try:
            row[column] = parse(raw[column])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}, column {column}", raw[column], f"is not a {parse.__name__.replace('parse_', '')}",
                              "give a leaderboard.csv written by frpo-bench (or fix that cell)") from None
    return row  # type: ignore[return-value]


def render_table(header: list[str], lines: list[list[str]]) -> str:
    """Columns padded to their widest cell, a dashed rule under the header."""
    rows = [header, *lines]
    widths = [max(len(str(line[i])) for line in rows) for i in range(len(header))]
    text = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in rows]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)
