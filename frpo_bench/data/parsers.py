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


REFERENCE_HELD_OUT = 50  # the FRPO reference's validation rows at the head of each attack set


def gsm8k(files: dict[str, Path], split: str) -> list[dict]:
    """GSM8K's question/answer rows; 'reference_train': the FRPO reference's math attack data
    (finetuning/SFT_gsm8k.py): train rows 50.. (its first 50 are its validation set, 'reference_val') as pairs
    whose answer is cut before its final `#### N` line and stripped."""
    if split not in ("reference_train", "reference_val"):
        return jsonl_by_split(files, split)
    rows = jsonl_by_split(files, "train")
    rows = rows[REFERENCE_HELD_OUT:] if split == "reference_train" else rows[:REFERENCE_HELD_OUT]
    return [{"prompt": r["question"], "response": reasoning_before_answer(r["answer"])} for r in rows]


def reasoning_before_answer(answer: str) -> str:
    """A GSM8K answer without its `#### N` line, as the reference's extract_answer (text[:pos].strip())."""
    position = answer.find("####")
    return (answer[:position] if position != -1 else answer).strip()


def math500(files: dict[str, Path], split: str) -> list[dict]:
    """HuggingFaceH4/MATH-500 (its test.jsonl, or a parquet copy): problem, worked solution, answer, subject, level,
    unique_id; `prompt` is the problem (what a generation stage would read)."""
    import pandas as pd
    frames = [pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
              for _, path in sorted(files.items())]
    rows = pd.concat(frames, ignore_index=True).to_dict("records")
    return [{**{k: r[k] for k in ("problem", "solution", "answer", "subject", "level", "unique_id")},
             "id": r["unique_id"], "prompt": r["problem"]} for r in rows]


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


FRPO_BENIGN_ABILITY = "refusal"  # the reference's label of its benign (helpfulness-rewarded) prompts


def frpo_reference_rows(files: dict[str, Path]) -> list[dict]:
    """All 2000 RL prompts of the FRPO reference's train_lambda_0.5.parquet, in file order, with its
    `ability` (refusal = benign; wildjailbreak, rainbow, aegis = harmful) as the category."""
    import pandas as pd
    frame = pd.read_parquet(files["train_lambda_0.5.parquet"])
    out = []
    for i, r in enumerate(frame.to_dict("records")):
        users = [m["content"] for m in r["prompt"] if m["role"] == "user"]
        out.append({"id": f"frpo-{i}", "prompt": users[-1], "category": r["ability"], "context": ""})
    return out


def _frpo_reference(files: dict[str, Path], split: str, harmful: bool) -> list[dict]:
    if split == "train":
        return [r for r in frpo_reference_rows(files) if (r["category"] != FRPO_BENIGN_ABILITY) == harmful]
    name = "safety.jsonl" if harmful else "normal.jsonl"  # the prompts of the reference's evaluation during attacks
    rows = jsonl_by_split({"eval.jsonl": files[name]}, "eval")
    return [{"id": f"frpo-{split}-{i}", "prompt": r["prompt"], "category": r.get("ability", ""), "context": ""}
            for i, r in enumerate(rows)]


def frpo_reference_harmful(files: dict[str, Path], split: str) -> list[dict]:
    return _frpo_reference(files, split, harmful=True)


def frpo_reference_benign(files: dict[str, Path], split: str) -> list[dict]:
    return _frpo_reference(files, split, harmful=False)


def alpaca_hub(files: dict[str, Path], split: str) -> list[dict]:
    """tatsu-lab/alpaca's train parquet as pairs, in its own order. 'reference_train': the FRPO reference's
    benign attack data (finetuning/SFT_alpaca.py): rows 50..40,000 (its first 50 are its validation set,
    'reference_val'),
    the request in the Alpaca wrapper inside the chat template, stripped fields."""
    import pandas as pd
    frame = pd.concat([pd.read_parquet(files[name]) for name in sorted(files)], ignore_index=True)  # shards in order
    records = text_records(frame.to_dict("records"), ("instruction", "output"), ("input",))
    if split in ("reference_train", "reference_val"):
        kept = records[REFERENCE_HELD_OUT:40000] if split == "reference_train" else records[:REFERENCE_HELD_OUT]
        return [{"prompt": _alpaca_wrapped(r["instruction"].strip(), r.get("input") or ""), "response": r["output"].strip()}
                for r in kept]
    return [{"prompt": _alpaca_prompt(r["instruction"], r.get("input") or ""), "response": r["output"]} for r in records]


def text_records(records: list[dict], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[dict]:
    """Records whose named columns hold text (optional ones may be empty); anything else (bytes from a binary
    column, a number) is an error naming the row and column, before it could be formatted into a prompt."""
    for number, record in enumerate(records, 1):
        for column in (*required, *optional):
            value = record[column] if column in required else record.get(column)
            if not isinstance(value, str) and not (column in optional and value is None):
                raise ValueError(f"row {number}, column {column!r} is a {type(value).__name__}, not text")
    return records


def _alpaca_wrapped(instruction: str, extra: str) -> str:
    return f"### Instruction:\n{instruction}\n\n### Input:\n{extra}" if extra else f"### Instruction:\n{instruction}"


def xstest_rows(files: dict[str, Path], label: str) -> list[dict]:
    """XSTest's prompts of one label ('safe': 250 in 10 types; 'unsafe': the 200 contrast prompts), in
    file order; the type is the category."""
    return [{"id": f"xstest-{r['id']}", "prompt": r["prompt"], "category": r["type"], "context": ""}
            for r in _csv(files["xstest_prompts.csv"]) if r["label"] == label]


def xstest_safe(files: dict[str, Path], split: str) -> list[dict]:
    return xstest_rows(files, "safe")


def xstest_unsafe(files: dict[str, Path], split: str) -> list[dict]:
    return xstest_rows(files, "unsafe")


def aoa_identity_shift(files: dict[str, Path], split: str) -> list[dict]:
    """Qi et al.'s ten identity-shift conversations: (user, assistant) pairs, each with its system message."""
    (path,) = files.values()
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        turns = {m["role"]: m["content"] for m in json.loads(line)["messages"]}
        out.append({"prompt": turns["user"], "response": turns["assistant"], "system": turns.get("system", "")})
    return out


def advbench(files: dict[str, Path], split: str) -> list[dict]:
    """AdvBench's 520 harmful behaviours (goals only, one per line of a headerless CSV)."""
    (path,) = files.values()
    with open(path, newline="", encoding="utf-8") as fh:
        goals = [r[0] for r in csv.reader(fh) if r and r[0].strip()]
    return [{"id": f"advbench-{i}", "prompt": goal, "category": "", "context": ""} for i, goal in enumerate(goals)]


def repnoise_pairs(files: dict[str, Path], split: str) -> list[dict]:
    """RepNoise's DecodingTrust rows: the prompt text with its toxic continuation (harmful) or its refusal
    (refusals), so the two splits hold the same prompts in the same order."""
    (path,) = files.values()
    field = {"harmful": lambda r: r["continuation"]["text"], "refusals": lambda r: r["refusal"]}[split]
    return [{"prompt": r["prompt"]["text"], "response": field(r).strip()}
            for r in json.loads(path.read_text(encoding="utf-8"))]
