"""Where a demo run's generate and score seconds went on the resident engine, from its progress log.

    python benchmarks/demo_stages.py --backends vllm+merged --score-on-engine --store /tmp/da > run.log 2>&1
    python benchmarks/engine_log_totals.py run.log

Per stage group (final or trajectory generation, each scored metric): the stages' wall seconds, the engine's own
seconds and tokens (its "generated N completions, T tokens in S s" lines), and the weight swaps ("after swapping in
its weights (S s)"); then the engine's starts. Prints JSON.
"""
from __future__ import annotations

import json
import re
import sys

STAGE = re.compile(r"\[\d+/\d+\] (\w+)\s+(.*)")
ENGINE = re.compile(r"generated \d+ completions, (\d+) tokens in ([\d.]+)s.*?(?:swapping in its weights \(([\d.]+)s\))?$")
DONE = re.compile(r"done in ([\d.]+)s")
START = re.compile(r"vLLM engine ready in ([\d.]+)s")


def totals(lines) -> dict:
    groups: dict[str, dict] = {}
    starts: list[float] = []
    group = None
    for line in lines:
        line = line.strip()
        stage = STAGE.match(line)
        if stage:
            kind, label = stage.groups()
            if kind == "generate":
                group = "generate: " + ("trajectory" if "step=" in label else "final")
            else:
                group = f"{kind}: {label.split('::')[-1].split()[0]}" if "::" in label else kind
            continue
        row = groups.setdefault(group, {"wall_s": 0.0, "engine_s": 0.0, "swap_s": 0.0, "tokens": 0}) if group else None
        if row is None:
            continue
        if (m := ENGINE.search(line)):
            row["tokens"] += int(m.group(1))
            row["engine_s"] += float(m.group(2))
            row["swap_s"] += float(m.group(3) or 0)
        elif (m := DONE.search(line)):
            row["wall_s"] += float(m.group(1))
        elif (m := START.search(line)):
            starts.append(float(m.group(1)))
    kept = {name: {k: round(v, 1) for k, v in row.items()} for name, row in groups.items() if row["wall_s"] >= 0.05}
    return {"groups": kept, "engine_starts_s": starts}


if __name__ == "__main__":
    with open(sys.argv[1], errors="replace") as log:
        print(json.dumps(totals(log), indent=1))
