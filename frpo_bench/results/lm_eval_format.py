"""Per model of a run, its scores in lm-evaluation-harness's own file shapes, so that scripts written
for lm-eval output read ours: `lm_eval/<model>/results_<datetime>.json` (results keyed
`metric,filter` with `metric_stderr,filter`, configs, versions, n-shot, higher_is_better,
n-samples, config, git_hash, date, ...) beside one `samples_<task>_<datetime>.jsonl` per task
(doc, arguments, resps, filtered_resps, filter, metrics, doc/prompt/target hashes, the score).

A model is one (base, defense, attack, lr, seed, step); a task is one of the recipe's evaluations,
named by its metric. What lm-eval has no field for (the judge, its template, the dataset revision,
the 95% interval, the judge's raw output per sample) sits under the key `frpo_bench`. Filters are
`none` except where the evaluator applied one (GSM8K's strict-match and flexible-extract in samples).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from frpo_bench.files import note_written, remove_written, write_text_atomic

FILTER = "none"
ENV_KEYS = ("pretty_env_info", "upper_git_hash", "tokenizer_pad_token", "tokenizer_eos_token", "tokenizer_bos_token",
            "eot_token_id", "max_length", "model_source", "system_instruction", "system_instruction_sha",
            "fewshot_as_multiturn", "chat_template", "chat_template_sha")


def model_name(record: dict) -> str:
    """The directory name of one model: lm-eval's model_name_sanitized slot."""
    parts = [record["base"], record["defense"], record["attack"]]
    if record["attack_lr"]:
        parts.append(f"lr{record['attack_lr']}")
    if record.get("seed") is not None:
        parts.append(f"seed{record['seed']}")
    if record.get("intermediate"):
        parts.append(f"step{record['step']}")
    return "__".join(str(p).replace("/", "-") for p in parts)


def hash_string(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stderr(values: list[float]) -> float | str:
    """Standard error of the mean over samples, as lm-eval reports for mean-aggregated metrics."""
    if len(values) < 2:
        return "N/A"
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def task_results(task: str, metrics: list[dict]) -> dict:
    entry: dict = {"name": task, "alias": task, "sample_len": metrics[0]["n"]}
    for r in metrics:
        entry[f"{r['metric']},{FILTER}"] = r["value"]
        entry[f"{r['metric']}_stderr,{FILTER}"] = stderr(r["per_sample"])
    return entry


def task_config(task: str, metrics: list[dict], setting: dict) -> dict:
    main = metrics[0]
    return {"task": task, "dataset_path": main["dataset"], "dataset_name": None, "test_split": main["split"],
            "output_type": "generate_until", "num_fewshot": setting.get("num_fewshot", 0),
            "generation_kwargs": setting.get("generation", {}),
            "metric_list": [{"metric": r["metric"], "aggregation": "mean", "higher_is_better": r["higher_is_better"]}
                            for r in metrics],
            "repeats": 1, "metadata": {"version": main["evaluator"], "judge": main["judge"]}}


def sample_lines(task: str, metrics: list[dict], samples: list[dict], setting: dict) -> list[dict]:
    lines = []
    for i, s in enumerate(samples):
        doc = {"id": s.get("id"), "prompt": s.get("prompt", "")}
        target = str(s.get("target", ""))
        response = s.get("response") or ""
        extra = {k: v for k, v in s.items() if k not in ("prompt", "response", "score", "target")}
        lines.append({"doc_id": i, "doc": doc, "target": target,
                      "arguments": {"gen_args_0": {"arg_0": doc["prompt"], "arg_1": setting.get("generation", {})}},
                      "resps": [[response]], "filtered_resps": [s.get("extracted", response)],
                      "filter": s.get("filter", FILTER), "metrics": [task],
                      "doc_hash": hash_string(json.dumps(doc, indent=2, ensure_ascii=False)),
                      "prompt_hash": hash_string(doc["prompt"]), "target_hash": hash_string(target),
                      task: s.get("score"), "frpo_bench": extra})
    return lines


def model_results(records: list[dict], settings: dict[str, dict], context: dict) -> dict:
    """The results JSON of one model from its records (one or more metrics per score stage)."""
    tasks: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: not r.get("main", True)):
        tasks.setdefault(r["score_key"], []).append(r)
    by_task = {metrics[0]["metric"]: metrics for metrics in tasks.values()}
    first = records[0]
    versions = context.get("versions", {})
    return {
        "results": {t: task_results(t, m) for t, m in by_task.items()},
        "group_subtasks": {t: [] for t in by_task},
        "configs": {t: task_config(t, m, settings.get(m[0]["score_key"], {})) for t, m in by_task.items()},
        "versions": {t: m[0]["evaluator"] for t, m in by_task.items()},
        "n-shot": {t: settings.get(m[0]["score_key"], {}).get("num_fewshot", 0) for t, m in by_task.items()},
        "higher_is_better": {t: {r["metric"]: r["higher_is_better"] for r in m} for t, m in by_task.items()},
        "n-samples": {t: {"original": settings.get(m[0]["score_key"], {}).get("split_size", m[0]["n"]),
                          "effective": m[0]["n"]} for t, m in by_task.items()},
        "config": {"model": "frpo-bench", "model_args": {k: first[k] for k in ("model", "base", "defense", "attack",
                                                                                 "attack_lr", "seed", "step")},
                   "model_num_parameters": None, "model_dtype": None, "model_revision": None, "model_sha": None,
                   "batch_size": None, "batch_sizes": [], "device": context.get("device"), "use_cache": None,
                   "limit": None, "bootstrap_iters": 2000, "gen_kwargs": context.get("generation", {}),
                   "random_seed": first["seed"], "numpy_seed": first["seed"], "torch_seed": first["seed"],
                   "fewshot_seed": first["seed"]},
        "git_hash": context.get("git_sha", "")[:7], "date": context.get("date", 0.0),
        **{k: None for k in ENV_KEYS},
        "transformers_version": versions.get("transformers"), "lm_eval_version": versions.get("lm_eval"),
        "task_hashes": {}, "model_name": model_name(first), "model_name_sanitized": model_name(first),
        "total_evaluation_time_seconds": str(sum(settings.get(k, {}).get("seconds", 0.0) for k in tasks)),
        "frpo_bench": {"recipe": first["recipe"], "version": versions.get("frpo-bench"),
                       "tasks": {t: {"evaluator": m[0]["evaluator"], "judge": m[0]["judge"],
                                     "template": m[0]["template"], "dataset": m[0]["dataset"], "split": m[0]["split"],
                                     "dataset_revision": m[0]["dataset_revision"], "score_key": m[0]["score_key"],
                                     "completions_key": m[0].get("completions_key", "")} for t, m in by_task.items()}},
    }


def write(run_dir: Path, records: list[dict], samples: dict[str, list[dict]], settings: dict[str, dict],
          context: dict) -> list[Path]:
    """lm_eval/<model>/results_<datetime>.json and samples_<task>_<datetime>.jsonl for every scored model;
    older files of the same model are removed once the new ones are in place. Returns the results paths."""
    stamp = context["timestamp"]
    models: dict[str, list[dict]] = {}
    for r in records:
        if r["score_key"] in samples:
            models.setdefault(model_name(r), []).append(r)
    written = []
    for name, mine in models.items():
        folder = run_dir / "lm_eval" / name
        results = model_results(mine, settings, context)
        keep = {f"results_{stamp}.json"}
        for task, entry in results["frpo_bench"]["tasks"].items():
            metrics = [r for r in mine if r["score_key"] == entry["score_key"]]
            lines = sample_lines(task, metrics, samples[entry["score_key"]], settings.get(entry["score_key"], {}))
            keep.add(f"samples_{task}_{stamp}.jsonl")
            write_text_atomic(folder / f"samples_{task}_{stamp}.jsonl",
                              "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        write_text_atomic(folder / f"results_{stamp}.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        note_written(run_dir, [folder / name for name in keep])
        remove_written(run_dir, [old for old in folder.iterdir()
                                 if old.name.startswith(("results_", "samples_")) and old.name not in keep])
        written.append(folder / f"results_{stamp}.json")
    for stale in (run_dir / "lm_eval").glob("*/results_*.json"):  # models of an earlier run of this directory
        if stale.parent.name not in models:
            remove_written(run_dir, sorted(stale.parent.iterdir()))
            if not any(stale.parent.iterdir()):
                stale.parent.rmdir()
    return written
