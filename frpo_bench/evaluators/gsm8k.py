"""GSM8K accuracy through lm-eval itself, so the number is lm-eval's number.

The task is lm-eval's own gsm8k.yaml (included by path), pointed at local json files (the
real GSM8K files, or the demo arithmetic set) or at the Hub dataset, with its test split set to
the recipe's `prompts.split`. The questions scored are the rows the recipe's DataRef selects (the
seeded sample `n`, after `skip`), passed to lm-eval as document indices (`samples`). lm-eval
generates and scores; this module only writes the task file, calls `simple_evaluate`, and keeps
its per-sample records. `command_line()` gives the equivalent `lm_eval` invocation.
"""
from __future__ import annotations

from frpo_bench.evaluators.base import EvalResult, Metric, ScoreInputs
from frpo_bench.evaluators.lm_eval_tasks import (
    LmEvalOptions,
    LmEvalTaskEvaluator,
    command_line,
    engine_lm,
    lm_eval_version,
    loaded_model,
    model_args,
    run_lm_eval,
    selected_documents,
    vllm_model_args,
    write_task,
)

VERSION = "lm-eval-gsm8k-v2"  # v2: the DataRef's seeded sample and split (v1: the first n test documents)
FILTERS = ("strict-match", "flexible-extract")


Options = LmEvalOptions  # lm-eval's gsm8k defaults: 5-shot, 256 tokens


class Gsm8kEvaluator(LmEvalTaskEvaluator):
    """GSM8K exact match via lm-eval (strict-match; flexible-extract as a second metric)."""

    Options = Options
    version = VERSION
    needs_completions = False

    def score(self, inputs: ScoreInputs, options: Options) -> EvalResult:
        from frpo_bench.models.device import compute_device
        task_path, task = write_task(inputs.workdir, inputs.dataset, inputs.split)
        samples = selected_documents(inputs.positions, inputs.dataset, inputs.split)
        args = model_args(inputs, options)
        if options.backend == "vllm":  # the run's resident engine, this model's weights swapped in
            lm_eval_model = "vllm"
            out = run_lm_eval(task_path.parent, task, args, options, samples, engine_lm(inputs, options))
            args = vllm_model_args(inputs, options)
        else:  # in-process, on weights loaded once (the recorded command line loads the same weights)
            lm_eval_model = "hf"
            out = run_lm_eval(task_path.parent, task, args, options, samples, loaded_model(inputs.model, options))
        logged = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        per_filter = {f: [float(s["exact_match"]) for s in logged if s["filter"] == f] for f in FILTERS}
        records = [{"id": s["doc_id"], "prompt": s["doc"]["question"], "response": s["resps"][0][0],
                    "target": s["target"], "extracted": s["filtered_resps"][0], "filter": s["filter"],
                    "score": float(s["exact_match"])} for s in logged]
        reported = {f: out["results"][task][f"exact_match,{f}"] for f in FILTERS}
        meta = {"judge": f"lm-eval {lm_eval_version()} gsm8k exact_match",
                "template": f"lm_eval gsm8k.yaml, {options.num_fewshot}-shot"
                            + (", chat template" if options.apply_chat_template else ""),
                "lm_eval_reported": reported,
                "command_line": command_line(task_path.parent, task, args, options, samples, lm_eval_model,
                                             compute_device()),
                "backend": options.backend}
        metrics = [Metric("", per_filter["strict-match"], True, "accuracy"),
                   Metric("flexible", per_filter["flexible-extract"], True, "accuracy")]
        return EvalResult(metrics, records, meta)
