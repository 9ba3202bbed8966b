"""MBPP+ / HumanEval+ pass@1 as EvalPlus scores it, the FRPO reference's code capability measure
(eval/run_MBPP_evalplus.sh: `evalplus.evaluate --dataset mbpp --greedy`).

What is EvalPlus's own: the problems (its loader over its release file: data/evalplus_release), the chat prompt
(`make_raw_chat_prompt` with the instruction and response prefixes its codegen uses, read from its source), the
stop strings, the extraction of the function from the answer (`sanitize`), the ground truth (`get_groundtruth`
running the canonical solutions) and the check of each solution against base and extra inputs
(`check_correctness`: a sandboxed subprocess per solution, time limits from the ground truth's own times). What is
the harness's: the greedy generation, batched on the resident weights (EvalPlus's vLLM backend generates one task
at a time). The main metric is the plus tests' pass@1 (a task passes when its base and extra tests all pass: MBPP+),
the base tests' second.

The model's code runs on this machine: the evaluator refuses to plan unless `confirm_run_unsafe_code` is set,
as lm-eval does for its code tasks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from frpo_bench.errors import ConfigError
from frpo_bench.evaluators.base import EvalResult, EvaluatorBase, Metric, ModelScoringOptions, ScoreInputs
from frpo_bench.typed import check_positive, key_fields_except, opt
from frpo_bench.work import CODE_CHECK_SECONDS, PROMPT_TOKENS, Generate, InferenceMemory, Shape, Wait, Work

VERSION = "evalplus-0.3-pass1-v1"
PASS = "pass"


@dataclass
class Options(ModelScoringOptions):
    confirm_run_unsafe_code: bool = opt(False, help="run the model's code (in EvalPlus's sandboxed subprocesses) to "
                                                    "score it; required, as lm-eval requires it for code tasks")
    dtype: str = opt("bfloat16", help="compute dtype (EvalPlus's default: bfloat16); float32, or auto")
    max_new_tokens: int = opt(768, help="generation budget per task (EvalPlus's default: 768)")
    min_time_limit: float = opt(1.0, help="seconds a test may take at least (EvalPlus's default)")
    gt_time_limit_factor: float = opt(4.0, help="a test may take this many times the canonical solution's time "
                                                "(EvalPlus's default)")
    batch_size: int = opt(8, help="tasks generated together (transport only)")
    parallel: int = opt(0, help="processes checking solutions; 0: half the cores, as EvalPlus (transport only)")

    def key_fields(self) -> dict:
        return key_fields_except(self, ("batch_size", "parallel"))

    def validate(self, path: str) -> None:
        super().validate(path)
        check_positive(self, path, "max_new_tokens", "min_time_limit", "gt_time_limit_factor")
        if not self.confirm_run_unsafe_code:
            raise ConfigError(f"{path}.confirm_run_unsafe_code", False, "must be true: EvalPlus scores a model by "
                              "running the code it writes", f"set {path}.confirm_run_unsafe_code: true to run it in "
                              "EvalPlus's sandboxed subprocesses, or leave the evaluator out")
        if self.parallel < 0:
            raise ConfigError(f"{path}.parallel", self.parallel, "must be 0 (half the cores) or positive", "use e.g. 4")


def chat_prefixes() -> dict[str, str]:
    """The instruction and response prefixes EvalPlus's codegen gives chat models, read from its source (its
    defaults, the first assignments in `run_codegen`): the prompt is EvalPlus's own, not a copy of it."""
    import ast
    import inspect

    import evalplus.codegen
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(inspect.getsource(evalplus.codegen.run_codegen))):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in ("instruction_prefix", "response_prefix"):
                found.setdefault(target.id, node.value.value)
    if set(found) != {"instruction_prefix", "response_prefix"}:
        raise RuntimeError("evalplus.codegen.run_codegen no longer assigns its prompt prefixes; pin evalplus==0.3.1")
    return found


def stop_strings() -> list[str]:
    """EvalPlus's stop strings for a chat model: its EOS list and the end of the answer's code block."""
    from evalplus.provider.utility import EOS
    return [*EOS, "\n```\n"]


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The text before the first stop string (how EvalPlus's vLLM backend returns it), tabs as 4 spaces."""
    cut = min((i for i in (text.find(s) for s in stops) if i != -1), default=len(text))
    return text[:cut].replace("\t", "    ")


def generate_answers(model_ref, prompts: list[str], options: Options, report) -> list[str]:
    """Greedy answers to raw (already templated) prompts, batched by length on the resident weights."""
    import torch

    from frpo_bench.models.generate_hf import even_batch_size
    from frpo_bench.models.resident import inference_model, inference_tokenizer
    tokenizer = inference_tokenizer(model_ref, padding_side="left")
    model = inference_model(model_ref, options.dtype, merge_dtype="float32")
    stops = stop_strings()
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    answers, start = [""] * len(ids), time.time()
    size = even_batch_size(len(order), options.batch_size)
    with torch.inference_mode():
        for b in range(0, len(order), size):
            idx = order[b: b + size]
            batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(model.device)
            out = model.generate(**batch, max_new_tokens=options.max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, stop_strings=stops, tokenizer=tokenizer,
                                 pad_token_id=tokenizer.pad_token_id)
            for i, row in zip(idx, out[:, batch["input_ids"].shape[1]:].tolist()):
                answers[i] = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stops)
            report(f"evalplus: generated {min(b + size, len(order))}/{len(order)} ({time.time() - start:.0f}s)")
    return answers


def check_solutions(dataset: str, problems: dict[str, dict], solutions: dict[str, str], options: Options,
                    workdir) -> dict[str, dict]:
    """EvalPlus's verdict per task: {"base": status, "plus": status} with status "pass" or "fail"/"timeout"."""
    import contextlib
    import io
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.evaluate import check_correctness, get_groundtruth
    not_none = MBPP_OUTPUT_NOT_NONE_TASKS if dataset == "mbpp" else []
    # an absolute "hash" makes EvalPlus keep the ground truth in this stage's folder (os.path.join drops its cache
    # directory), so no pickle from an earlier run or another subset is ever read back
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress prints would interleave with the harness's
        expected = get_groundtruth(problems, str(workdir / "evalplus_groundtruth"), not_none)
    workers = options.parallel or max(1, (os.cpu_count() or 2) // 2)
    spawn = multiprocessing.get_context("spawn")  # a clean interpreter: this process holds torch's thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        futures = {task_id: pool.submit(check_correctness, dataset, 0, problems[task_id], solution, expected[task_id],
                                        False, True, task_id, options.min_time_limit, options.gt_time_limit_factor)
                   for task_id, solution in solutions.items()}
        results = {task_id: future.result() for task_id, future in futures.items()}
    return {task_id: {"base": r["base"][0], "plus": r["plus"][0]} for task_id, r in results.items()}


class EvalPlusEvaluator(EvaluatorBase):
    """pass@1 on MBPP+ or HumanEval+ (greedy), scored by EvalPlus's own checker; the model's code is run."""

    Options = Options
    version = VERSION
    needs_completions = False

    @staticmethod
    def work(options, shape: Shape) -> Work:
        n, tokens = shape.prompts, options.max_new_tokens
        checks = n * CODE_CHECK_SECONDS / max(options.parallel or shape.cpus // 2, 1)  # one solution per process
        return Work(loads=1, steps=(Generate(n, tokens, options.batch_size, options.dtype), Wait(checks)),
                    memory=(InferenceMemory(options.batch_size, PROMPT_TOKENS + tokens),))

    def score(self, inputs: ScoreInputs, options: Options) -> EvalResult:
        from importlib import metadata

        from evalplus.provider.utility import make_raw_chat_prompt
        from evalplus.sanitize import sanitize

        from frpo_bench.data import evalplus_release
        from frpo_bench.files import sha256_file
        from frpo_bench.models.resident import inference_tokenizer
        if inputs.dataset not in evalplus_release.RELEASES:
            raise ConfigError("prompts.dataset", inputs.dataset, "is not an EvalPlus set",
                              f"use one of {', '.join(evalplus_release.RELEASES)}")
        flavour = evalplus_release.RELEASES[inputs.dataset][2]
        every = evalplus_release.problems(inputs.dataset)
        task_ids = [row["id"] for row in inputs.prompts]
        problems = {task_id: every[task_id] for task_id in task_ids}
        prefixes = chat_prefixes()
        tokenizer = inference_tokenizer(inputs.model, padding_side="left")
        prompts = [make_raw_chat_prompt(problems[t]["prompt"].strip() + "\n", prefixes["instruction_prefix"],
                                        prefixes["response_prefix"], tokenizer) for t in task_ids]
        answers = generate_answers(inputs.model, prompts, options, inputs.report)
        solutions = {t: sanitize(answer, entrypoint=problems[t]["entry_point"]) for t, answer in zip(task_ids, answers)}
        inputs.report(f"evalplus: checking {len(solutions)} solutions against base and extra tests")
        verdicts = check_solutions(flavour, problems, solutions, options, inputs.workdir)
        records = []
        for task_id, answer in zip(task_ids, answers):
            base = verdicts[task_id]["base"] == PASS
            plus = base and verdicts[task_id]["plus"] == PASS
            records.append({"id": task_id, "prompt": problems[task_id]["prompt"], "response": answer,
                            "solution": solutions[task_id], "base_status": verdicts[task_id]["base"],
                            "plus_status": verdicts[task_id]["plus"], "score": float(plus)})
        release = evalplus_release.release_path(inputs.dataset)
        meta = {"judge": f"evalplus {metadata.version('evalplus')} check_correctness (base + extra tests)",
                "template": f"evalplus make_raw_chat_prompt, greedy, {options.max_new_tokens} new tokens, "
                            f"instruction prefix {prefixes['instruction_prefix']!r}",
                "release_file_sha256": sha256_file(release)}
        return EvalResult([Metric("", [r["score"] for r in records], True, "pass@1"),
                           Metric("base", [float(r["base_status"] == PASS) for r in records], True, "pass@1")],
                          records, meta)
