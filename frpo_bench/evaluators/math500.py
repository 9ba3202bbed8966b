"""MATH-500 accuracy through lm-eval's own minerva_math500 task, as the FRPO reference measures capability
(eval/run_math500.sh): 0-shot, the model's chat template, the system instruction "Please reason step by step, and
put your final answer within \\boxed{}.", greedy, up to 2,048 new tokens.

The task is lm-eval's minerva_math500.yaml included by path (its prompt, stop sequence and scoring byte for byte),
its data the Hub dataset HuggingFaceH4/MATH-500 through the harness's loader (a local copy in
$FRPO_BENCH_DATA/math500/ is used first) materialised as JSON lines. The main metric is lm-eval's `math_verify`
(the last \\boxed{} answer, or any parseable one, checked for equivalence with the reference solution's by
math-verify); `exact_match` (minerva's "Final Answer: The final answer is ..." format, which a boxed-answer
instruction rarely produces) is the second. The reference's script greps an IFEval metric name from the results,
so which of the two the paper reports is not recorded there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from frpo_bench.evaluators.base import EvalResult, Metric, ScoreInputs
from frpo_bench.evaluators.lm_eval_tasks import LmEvalOptions, LmEvalTaskEvaluator
from frpo_bench.typed import opt

VERSION = "lm-eval-minerva-math500-v1"
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
METRICS = ("math_verify", "exact_match")


@dataclass
class Options(LmEvalOptions):
    num_fewshot: int = opt(0, help="few-shot examples (the reference: 0)")
    max_gen_toks: int = opt(2048, help="generation budget per answer (the reference: 2048)")
    apply_chat_template: bool = opt(True, help="wrap prompts in the model's chat template (the reference: yes)")
    system_instruction: str = opt(BOXED_INSTRUCTION, help="system message (lm-eval --system_instruction; the "
                                                           "reference's boxed-answer instruction)")

    def validate(self, path: str) -> None:
        super().validate(path)
        if self.backend != "hf":
            from frpo_bench.errors import ConfigError
            raise ConfigError(f"{path}.backend", self.backend, "is not a MATH-500 backend here",
                              "use hf (lm-eval's transformers backend, on weights loaded once)")


def minerva_math500_yaml() -> Path:
    import lm_eval
    return Path(lm_eval.__file__).parent / "tasks" / "minerva_math" / "minerva_math500.yaml"


class Math500Evaluator(LmEvalTaskEvaluator):
    """MATH-500 accuracy via lm-eval (math_verify; exact_match as a second metric)."""

    Options = Options
    version = VERSION
    needs_completions = False

    def score(self, inputs: ScoreInputs, options: Options) -> EvalResult:
        from frpo_bench.evaluators.lm_eval_tasks import (
            command_line,
            lm_eval_version,
            loaded_model,
            model_args,
            run_lm_eval,
            selected_documents,
            write_task,
        )
        from frpo_bench.models.device import compute_device
        task_path, task = write_task(inputs.workdir, inputs.dataset, inputs.split, "frpo_math500",
                                     include=minerva_math500_yaml())
        samples = selected_documents(inputs.positions, inputs.dataset, inputs.split)
        out = run_lm_eval(task_path.parent, task, model_args(inputs, options), options, samples,
                          loaded_model(inputs.model, options), options.system_instruction)
        logged = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        records = [{"id": s["doc_id"], "prompt": s["doc"]["problem"], "response": s["resps"][0][0],
                    "target": s["doc"]["answer"], "math_verify": float(s["math_verify"]),
                    "exact_match": float(s["exact_match"]), "score": float(s["math_verify"])} for s in logged]
        meta = {"judge": f"lm-eval {lm_eval_version()} minerva_math500 math_verify",
                "template": f"lm_eval minerva_math500.yaml, {options.num_fewshot}-shot"
                            + (", chat template" if options.apply_chat_template else "")
                            + f", system: {options.system_instruction!r}",
                "lm_eval_reported": {m: out["results"][task][f"{m},none"] for m in METRICS},
                "command_line": command_line(task_path.parent, task, model_args(inputs, options), options, samples,
                                             "hf", compute_device(), options.system_instruction)}
        return EvalResult([Metric("", [r["math_verify"] for r in records], True, "accuracy"),
                           Metric("exact_match", [r["exact_match"] for r in records], True, "accuracy")], records, meta)
