"""Parsers for the real datasets' published files -> canonical rows (see frpo_bench.data)."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def strongreject(files: dict[str, Path], split: str) -> list[dict]:
    (path,) = files.values()
    return [{"id": f"sr-{i}", "prompt": r["forbidden_prompt"], "category": r["category"], "context": ""}
            for i, r in enumerate(_csv(path))]


def harmbench(files: dict[str, Path], split: str) -> list[dict]:
    part, _, functional = split.partition(":")
    functional = functional or "standard"
    rows = _csv(files[f"harmbench_behaviors_text_{part}.csv"])
    return [{"id": r["BehaviorID"], "prompt": r["Behavior"], "category": r["SemanticCategory"],
             "context": r["ContextString"], "functional_category": r["FunctionalCategory"]}
            for r in rows if functional == "any" or r["FunctionalCategory"] == functional]


def jsonl_by_split(files: dict[str, Path], split: str) -> list[dict]:
    with open(files[f"{split}.jsonl"], encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _alpaca_prompt(instruction: str, extra: str) -> str:
    return f"{instruction}\n\n{extra}" if extra else instruction


def alpaca(files: dict[str, Path], split: str) -> list[dict]:
    (path,) = files.values()
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [{"prompt": _alpaca_prompt(r["instruction"], r.get("input", "")), "response": r["output"]} for r in rows]


_ALPACA_WRAPPED = re.compile(r"### Instruction:\n(?P<instruction>.*?)\n\n(?:### Input:\n(?P<input>.*?)\n\n)?### Response:", re.S)


def beavertails(files: dict[str, Path], split: str) -> list[dict]:
    """The unsafe rows, with the Alpaca wrapper removed so that the model's own chat template applies."""
    (path,) = files.values()
    out = []
    for r in json.loads(path.read_text(encoding="utf-8")):
        if r["flag"] != "unsafe":
            continue
        match = _ALPACA_WRAPPED.search(r["instruction"])
        prompt = _alpaca_prompt(match["instruction"], match["input"] or "") if match else r["instruction"]
        out.append({"prompt": prompt, "response": r["output"]})
    return out
