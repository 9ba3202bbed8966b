"""The per-sample view the Inspect log and the report share: for each model and completion set, every
prompt with the verdict of each judge that scored that completion."""
from __future__ import annotations

from typing import Iterator

from frpo_bench.results.lm_eval_format import model_name


def sample_groups(records: list[dict], samples: dict[str, list[dict]]) -> dict[tuple, list[dict]]:
    """(model, completion source) -> the records scoring those completions (main metrics only)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("main", True) and r["score_key"] in samples:
            source = r.get("completions_key") or r["score_key"]
            groups.setdefault((model_name(r), source), []).append(r)
    return groups


def judged_items(records: list[dict], samples: dict[str, list[dict]]) -> Iterator[tuple[str, dict, int, dict, list]]:
    """(model name, the group's first record, index, sample, [(record, that judge's sample)]) per completion."""
    for (name, _), judged in sample_groups(records, samples).items():
        first = max(judged, key=lambda r: len(samples[r["score_key"]]))  # a judge may score a prefix of the set
        for i, sample in enumerate(samples[first["score_key"]]):
            yield name, first, i, sample, [(r, samples[r["score_key"]][i]) for r in judged
                                           if i < len(samples[r["score_key"]])]
