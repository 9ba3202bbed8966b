"""The run as one Inspect log (inspect_ai's own log API), so `inspect view` browses it,
`read_eval_log` and `evals_df` load it, and `inspect score` can re-score it.

One sample per (model, prompt set, prompt): the prompt, the model's completion, and every judge
that scored that completion as a Score (value, the parsed verdict as answer, the judge's raw
output as explanation). Models differ between samples (each attacked model of the grid), so the
sample id and metadata carry the cell. Results: one EvalScore per (metric, model), its mean and
standard error, named `metric @ model`.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from frpo_bench.files import note_written, remove_written
from frpo_bench.results.agreement import judge_output
from frpo_bench.results.lm_eval_format import model_name, stderr
from frpo_bench.results.per_sample import judged_items

SUFFIX = ".eval"


def eval_samples(records: list[dict], samples: dict[str, list[dict]]) -> list:
    from inspect_ai.log import EvalSample
    from inspect_ai.model import ChatMessageAssistant, ChatMessageUser, ModelOutput
    from inspect_ai.scorer import Score
    out = []
    for name, first, i, sample, verdicts in judged_items(records, samples):
        prompt, response = sample.get("prompt", ""), sample.get("response") or ""
        scores = {r["metric"]: Score(value=s["score"] if s.get("score") is not None else "unparsed",
                                     answer=str(s.get("extracted", s.get("refused", s.get("parsed", "")))),
                                     explanation=judge_output(s) or None,
                                     metadata={"judge": r["judge"], "evaluator": r["evaluator"],
                                               "higher_is_better": r["higher_is_better"]})
                  for r, s in verdicts}
        filter_name = f"/{sample['filter']}" if "filter" in sample else ""
        out.append(EvalSample(
            id=f"{name}/{first['dataset']}{filter_name}/{i}", epoch=1, input=prompt, target=str(sample.get("target", "")),
            messages=[ChatMessageUser(content=prompt), ChatMessageAssistant(content=response)],
            output=ModelOutput.from_content(first["model"], response), scores=scores,
            metadata={"model": name, **{k: first[k] for k in ("base", "defense", "attack", "attack_lr", "seed",
                                                                 "step", "dataset", "split")},
                      "prompt_id": sample.get("id")}))
    return out


def eval_scores(records: list[dict]) -> list:
    from inspect_ai.log import EvalMetric, EvalScore
    scores = []
    for r in records:
        name = f"{r['metric']} @ {model_name(r)}"
        err = stderr(r["per_sample"])
        metrics = {"mean": EvalMetric(name="mean", value=r["value"])}
        if err != "N/A":
            metrics["stderr"] = EvalMetric(name="stderr", value=err)
        scores.append(EvalScore(name=name, scorer=r["evaluator"], scored_samples=r["n"], metrics=metrics,
                                metadata={"judge": r["judge"], "template": r["template"], "dataset": r["dataset"],
                                          "dataset_revision": r["dataset_revision"]}))
    return scores


def build_log(records: list[dict], samples: dict[str, list[dict]], context: dict):
    from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalPlan, EvalResults, EvalSpec, EvalStats
    scored = [r for r in records if r["score_key"] in samples]
    items = eval_samples(scored, samples)
    started = datetime.fromtimestamp(context["date"], tz=timezone.utc).isoformat()
    finished = datetime.fromtimestamp(context.get("finished", context["date"]), tz=timezone.utc).isoformat()
    recipe = scored[0]["recipe"] if scored else "run"
    spec = EvalSpec(created=started, task=f"frpo-bench/{recipe}", task_version=0,
                    dataset=EvalDataset(name=", ".join(sorted({r["dataset"] for r in scored})), samples=len(items)),
                    model=f"frpo-bench/{scored[0]['model'] if scored else 'none'}", config=EvalConfig(),
                    packages={k: v for k, v in context.get("versions", {}).items()},
                    metadata={"recipe": recipe, "git_sha": context.get("git_sha", ""),
                              "models": sorted({model_name(r) for r in scored})})
    return EvalLog(version=2, status="success", eval=spec, plan=EvalPlan(name="frpo-bench"),
                   results=EvalResults(total_samples=len(items), completed_samples=len(items),
                                       scores=eval_scores([r for r in scored if not r.get("intermediate")])),
                   stats=EvalStats(started_at=started, completed_at=finished), samples=items)


def write(run_dir: Path, records: list[dict], samples: dict[str, list[dict]], context: dict) -> Path:
    """inspect/<datetime>_<recipe>.eval, written to a temporary name and renamed; older logs of the run removed."""
    log = build_log(records, samples, context)
    folder = run_dir / "inspect"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{context['timestamp']}_{log.eval.task.replace('/', '-')}{SUFFIX}"
    tmp = folder / f".{path.name}.tmp{SUFFIX}"
    write_in_chunks(log, str(tmp))
    os.replace(tmp, path)
    note_written(run_dir, [path])
    remove_written(run_dir, [old for old in folder.glob(f"*{SUFFIX}") if old != path])
    return path


FLUSH_EVERY = 500  # samples


def write_in_chunks(log, location: str) -> None:
    """write_eval_log's .eval path (inspect_ai's EvalRecorder: init, start, each sample, finish), flushing
    the recorder's buffer every FLUSH_EVERY samples. inspect_ai 0.3.285 compares each buffered sample with
    all the others when it is added, so one flush at the end costs time quadratic in the samples: 7 s of
    the demo's 14 s of results here (10,000 samples), hours for a large sweep."""
    from inspect_ai._util._async import run_coroutine
    from inspect_ai.log._condense import condense_sample
    from inspect_ai.log._recorders.eval import EvalRecorder

    async def write() -> None:
        recorder = EvalRecorder(os.path.dirname(location))
        await recorder.log_init(log.eval, location, clean=True)
        await recorder.log_start(log.eval, log.plan)
        for i, sample in enumerate(log.samples or [], start=1):
            await recorder.log_sample(log.eval, condense_sample(sample))
            if i % FLUSH_EVERY == 0:
                await recorder.flush(log.eval)
        await recorder.log_finish(log.eval, log.status, log.stats, log.results, log.reductions, log.error,
                                  invalidated=log.invalidated, log_updates=log.log_updates,
                                  config_updates=log.config_updates)

    run_coroutine(write())
