"""A user's own prompt or pair file (JSONL, CSV or parquet) as a dataset: read, checked row by row, and
identified by the sha256 of its bytes (with the column mapping), so a changed file moves every key.

Every problem is one ConfigError naming the file, the row (1-based: the n-th row of data; a line where
the text itself is broken) and the fix, raised before any compute.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from pathlib import Path

from frpo_bench.data.spec import DatasetSpec
from frpo_bench.errors import ConfigError, error_summary
from frpo_bench.files import sha256_file

FORMATS = (".jsonl", ".csv", ".parquet")
FIELDS = {  # kind -> (required fields, optional fields) of its rows
    "prompts": (("prompt",), ("id", "category", "context")),
    "pairs": (("prompt", "response"), ()),
}
LOCAL_REVISION = "sha256"  # leaderboard rows show "sha256:<first 12 hex of the file>" as the revision


def check_format(path: str, where: str) -> None:
    if Path(path).suffix.lower() not in FORMATS:
        raise ConfigError(where, path, f"has an extension this reader does not know ({Path(path).suffix or 'none'})",
                          f"give a {', '.join(FORMATS)} file")


def mapping_fields(kind: str, columns: dict[str, str], where: str) -> None:
    required, optional = FIELDS[kind]
    for field in columns:
        if field not in (*required, *optional):
            raise ConfigError(f"{where}.columns.{field}", columns[field], f"is not a field of a {kind} row",
                              f"map any of {', '.join((*required, *optional))} to a column of the file")


@functools.lru_cache(maxsize=32)
def local_spec(path: str, size: int, mtime_ns: int, kind: str, columns: tuple[tuple[str, str], ...],
               harmful: bool, name: str) -> DatasetSpec:
    """The dataset of one file as the recipe maps it (cached per file state: a file changed since is read again)."""
    digest = sha256_file(Path(path))
    mapping = hashlib.sha256(json.dumps([kind, sorted(columns), harmful]).encode()).hexdigest()[:8]
    rows = tuple(read_rows(path, kind, dict(columns)))
    from frpo_bench.data.texts import check_texts
    check_texts(list(rows), f"{name} ({path})")
    return DatasetSpec(name=name, kind=kind, harmful=harmful, description=f"local file {path} ({len(rows)} rows)",
                       source=f"file:{path}", license="(the file's own)", parser="", splits=("all",),
                       revision=f"{LOCAL_REVISION}:{digest[:12]}", meta={"file": path, "rows": rows,
                                                                          "content": f"sha256:{digest}+{mapping}"})


def read_rows(path: str, kind: str, columns: dict[str, str]) -> list[dict]:
    """Rows in the shape `kind` asks for; a file with no rows, unreadable bytes or a missing field is an error."""
    raw = read_file_rows(Path(path))
    if not raw:
        raise ConfigError("prompt file", path, "holds no rows", "give a file with at least one row")
    required, optional = FIELDS[kind]
    rows = []
    for i, record in enumerate(raw):
        row = {}
        for field in (*required, *optional):
            column = columns.get(field, field)
            value = record.get(column)
            if field in required and (value is None or str(value).strip() == ""):
                have = ", ".join(map(str, record)) or "none"
                problem = f"has no '{column}' column" if column not in record else f"has an empty '{column}'"
                raise ConfigError("prompt file", path, f"row {i + 1} {problem} (the {field} of a {kind} row; "
                                  f"its columns: {have})", f"fill it in, or map {field} to another column with "
                                  f"columns: {{{field}: <column>}}")
            if value is not None and not isinstance(value, (str, int, float)):
                raise ConfigError("prompt file", path, f"row {i + 1}, column '{column}' is a {type(value).__name__}, "
                                  "not text", "store text in that column (a binary or nested column cannot be a prompt)")
            row[field] = "" if value is None else str(value)
        if kind == "prompts" and not row["id"]:
            row["id"] = str(i)
        rows.append(row)
    return rows


def read_file_rows(path: Path) -> list[dict]:
    """The file's records as dicts (its existence was checked by data.spec_for, which alone calls local_spec)."""
    if path.suffix.lower() == ".parquet":
        return read_parquet(path)
    text = decode(path)
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: a JSON string may hold U+2028
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError("prompt file", str(path), f"line {number} is not JSON ({err.msg}, column {err.colno})",
                              "write one JSON object per line") from None
        if not isinstance(record, dict):
            raise ConfigError("prompt file", str(path), f"line {number} is a JSON {type(record).__name__}, not an object",
                              'write one object per line, e.g. {"prompt": "..."}')
        rows.append(record)
    return rows


def decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as spreadsheet programs write, is not text
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError("prompt file", str(path), f"is not UTF-8: line {line} holds byte 0x{data[err.start]:02x}",
                          "re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # noqa: BLE001 - any unreadable parquet is one clear error
        raise ConfigError("prompt file", str(path), f"is not a readable parquet file ({error_summary(err)})",
                          "write it with pandas.DataFrame.to_parquet, or give JSONL or CSV") from None
