"""lm-eval in-process, shared by the evaluators that run its generate-until tasks (gsm8k, math500): a task file
that includes lm-eval's own task definition by path over local or Hub data, the model loaded once, the equivalent
`lm_eval run` command line, and the documents the recipe selects."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from frpo_bench.evaluators.base import EvaluatorBase, ScoreInputs
from frpo_bench.models import ModelRef
from frpo_bench.models.attention import AttentionOption
from frpo_bench.models.precision import DtypeOption
from frpo_bench.typed import Options as OptionsBase
from frpo_bench.typed import key_fields_except, opt
from frpo_bench.work import PROMPT_TOKENS, Generate, InferenceMemory, LmEvalStart, Shape, Work


@dataclass
class LmEvalOptions(DtypeOption, AttentionOption, OptionsBase):
    num_fewshot: int = opt(5, help="few-shot examples (lm-eval's gsm8k default: 5, first_n from train)")
    max_gen_toks: int = opt(256, help="generation budget per answer (lm-eval's default: 256)")
    apply_chat_template: bool = opt(False, help="wrap prompts in the model's chat template (lm-eval --apply_chat_template)")
    dtype: str = opt("float32", help="model dtype passed to lm-eval: float32, bfloat16, or auto (bf16 on a GPU, the faster one on a CPU)")
    batch_size: int = opt(8, help="lm-eval batch size (transport only)")
    attention: str = opt("sdpa", omit_if_default=True, help="hf backend: attention kernel, sdpa (transformers' default), "
                                                             "eager, grouped (eager without copying key/value heads), or "
                                                             "auto (whichever a probe measures fastest here at `dtype`; "
                                                             "part of the key: kernels differ in rounding)")
    backend: str = opt("hf", omit_if_default=True, help="hf: lm-eval's transformers backend; vllm: the run's resident vLLM "
                                  "engine (the one generation uses, the model's weights swapped in; an adapter merged in "
                                  "float32), through lm-eval's generate-until requests")

    def validate(self, path: str) -> None:
        from frpo_bench.errors import ConfigError
        from frpo_bench.typed import check_positive
        check_positive(self, path, "max_gen_toks", "batch_size")
        self.check_dtype(path)
        self.check_attention(path)
        if self.num_fewshot < 0:
            raise ConfigError(f"{path}.num_fewshot", self.num_fewshot, "is negative", "use 0 or more (lm-eval's: 5)")
        if self.backend not in ("hf", "vllm"):
            raise ConfigError(f"{path}.backend", self.backend, "is not a GSM8K backend", "use hf or vllm")

    def preflight(self, path: str) -> None:
        from frpo_bench.errors import ConfigError
        if self.backend == "vllm":
            from frpo_bench.models.generate import vllm_status
            usable, why = vllm_status()
            if not usable:
                raise ConfigError(f"{path}.backend", "vllm", why, "install vLLM or use hf")

    def resolve_installed(self, path: str, device: str) -> dict[str, str]:
        return {**super().resolve_installed(path, device), **self.resolve_attention(path, device, self.backend)}

    def key_fields(self) -> dict:
        return key_fields_except(self, ("batch_size",))  # backend omitted at hf: older keys stay valid

    def lm_eval_work(self, prompts: int) -> Work:
        """lm-eval's generate-until task on the model: its start, then every document's few-shot prompt read and
        its answer sampled."""
        context = PROMPT_TOKENS * (self.num_fewshot + 1)
        return Work(loads=1, steps=(LmEvalStart(), Generate(prompts, self.max_gen_toks, self.batch_size, self.dtype,
                                                            prompt_tokens=context)),
                    memory=(InferenceMemory(self.batch_size, 1024),))

    def uses_generation_engine(self) -> bool:
        return self.backend == "vllm"


def lm_eval_gsm8k_yaml() -> Path:
    import lm_eval
    return Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"


def write_task(workdir: Path, dataset: str, split: str = "test", task: str = "frpo_gsm8k",
               include: Path | None = None) -> tuple[Path, str]:
    """Write the task YAML (and, for local data, its json files) into workdir/tasks; `split` is scored. `include`:
    the lm-eval task definition it builds on (default: lm-eval's gsm8k.yaml)."""
    from frpo_bench.data import get, load_rows, locate
    tasks = workdir / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    spec = get(dataset)
    if spec.files:
        files = {f.name.split(".")[0]: str(locate(spec, f)) for f in spec.files}
    else:  # generated data: materialise it as json lines
        files = {}
        for name in spec.splits:
            path = tasks / f"{dataset}_{name}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in load_rows(dataset, name)))
            files[name] = str(path)
    data = ("dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n"
            + "".join(f"    {name}: {json.dumps(path)}\n" for name, path in sorted(files.items())))
    template = resources.files("frpo_bench.evaluators").joinpath("tasks/gsm8k_local.yaml").read_text()
    text = (template.replace("INCLUDE", json.dumps(str(include or lm_eval_gsm8k_yaml()))).replace("TASK", task)
            .replace("DATA\n", data + f"test_split: {split}\n"))
    path = tasks / f"{task}.yaml"
    path.write_text(text)
    return path, task


def model_args(inputs: ScoreInputs, options: LmEvalOptions) -> dict:
    # use_cache: checkpoints saved by training carry use_cache=False, which makes generation quadratic
    args = {"pretrained": inputs.model.path, "dtype": options.dtype, "use_cache": True}
    if options.attention != "sdpa":
        args["attn_implementation"] = options.attention
    if inputs.model.adapter:
        args["peft"] = inputs.model.adapter
    if inputs.model.trust_remote_code:
        args["trust_remote_code"] = True
    return args


def command_line(task_dir: Path, task: str, args: dict, options: LmEvalOptions, samples: list[int] | None,
                 lm_eval_model: str = "hf", device: str = "cpu", system_instruction: str | None = None) -> str:
    parts = ["lm_eval", "run", "--model", lm_eval_model, "--model_args", ",".join(f"{k}={v}" for k, v in args.items()),
             "--include_path", str(task_dir), "--tasks", task, "--num_fewshot", str(options.num_fewshot),
             "--batch_size", str(options.batch_size), "--gen_kwargs", f"max_gen_toks={options.max_gen_toks}",
             "--device", device]
    if samples is not None:
        parts += ["--samples", json.dumps({task: samples}, separators=(",", ":"))]
    if options.apply_chat_template:
        parts.append("--apply_chat_template")
    if system_instruction:
        parts += ["--system_instruction", system_instruction]
    return shlex.join(parts)


def vllm_model_args(inputs: ScoreInputs, options: LmEvalOptions) -> dict:
    """lm-eval's own vllm backend's arguments for the same model (the recorded command line, for a machine with the
    `vllm` distribution); an adapter there is served as a LoRA, where the resident engine merges it in float32."""
    args = {"pretrained": inputs.model.path, "dtype": options.dtype}
    if inputs.model.adapter:
        args.update(enable_lora=True, lora_local_path=inputs.model.adapter)
    if inputs.model.trust_remote_code:
        args["trust_remote_code"] = True
    return args


def engine_lm(inputs: ScoreInputs, options: LmEvalOptions):
    """lm-eval's LM on the run's resident vLLM engine (evaluators/lm_eval_engine.py)."""
    from frpo_bench.evaluators.lm_eval_engine import EngineLM
    from frpo_bench.generation_config import GenerationConfig
    return EngineLM(inputs.model, inputs.engine or GenerationConfig(), options.dtype, inputs.report)


def run_lm_eval(task_dir: Path, task: str, args: dict, options: LmEvalOptions, samples: list[int] | None,
                lm_eval_model="hf", system_instruction: str | None = None) -> dict:
    """lm-eval's simple_evaluate; `lm_eval_model` is a model name with `args`, or an lm-eval LM object."""
    from lm_eval import simple_evaluate

    from frpo_bench.models.device import compute_device
    reuse_per_process_work()
    named = isinstance(lm_eval_model, str)
    return simple_evaluate(
        model=lm_eval_model, model_args=args if named else None, tasks=[task], num_fewshot=options.num_fewshot,
        batch_size=options.batch_size, device=compute_device(), samples=None if samples is None else {task: samples},
        log_samples=True,
        gen_kwargs=f"max_gen_toks={options.max_gen_toks}", apply_chat_template=options.apply_chat_template,
        system_instruction=system_instruction, task_manager=task_manager(task_dir), bootstrap_iters=0)


def reuse_per_process_work() -> None:
    """Two things lm-eval redoes on every call, done once per process instead (the same values): the environment
    report it adds to results (torch's collect_env runs `pip list` in subprocesses: 0.4 s a call) and its compiled
    Jinja prompt templates (one compile per rendering: 802 for 100 one-shot GSM8K documents, 0.3 s). Measured on
    the 2-core EPYC: one run of 100 documents 0.85 -> 0.2 s besides the model's own time; a demo runs ten."""
    import functools
    import os

    from lm_eval import evaluator, utils
    if getattr(evaluator.add_env_info, "once_per_process", False):
        return
    compiled = functools.lru_cache(maxsize=256)(utils.env.from_string)
    utils.apply_template = lambda template, doc: compiled(template).render(**doc)
    collect, reports = evaluator.add_env_info, {}

    def add_env_info(storage: dict) -> None:
        cwd = os.getcwd()  # lm-eval reports the git commit of the folder above it
        if cwd not in reports:
            reports[cwd] = {}
            collect(reports[cwd])
        storage.update(json.loads(json.dumps(reports[cwd])))

    add_env_info.once_per_process = True
    evaluator.add_env_info = add_env_info
    evaluator.get_git_commit_hash = quiet_git_commit_hash


def quiet_git_commit_hash():
    """lm-eval's git_hash (`git describe --always` in the working directory, else the commit of a .git above it),
    without git's 'fatal: not a git repository' on the console of every run outside a checkout."""
    import os
    import subprocess

    from lm_eval.loggers.utils import get_commit_from_path
    try:
        done = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is not None and done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    return get_commit_from_path(os.getcwd())


def task_manager(task_dir: Path):
    """lm-eval's TaskManager over our task folder only: indexing every task lm-eval ships (14,000 YAML
    files) took 8.8 s of a 15.6 s scoring here; our task includes lm-eval's gsm8k.yaml by path."""
    from lm_eval.tasks import TaskManager
    return TaskManager(include_path=str(task_dir), include_defaults=False)


def loaded_model(ref: ModelRef, options: LmEvalOptions):
    """lm-eval's HF model class around weights loaded here: an adapter merged in float32 and then cast,
    exactly the weights `lm_eval run --model_args pretrained=...,peft=...,dtype=...` evaluates, without
    writing a merged copy to disk and loading it again (one load per cell instead of three)."""
    from lm_eval.models.huggingface import HFLM

    from frpo_bench.models.loading import load_tokenizer
    from frpo_bench.models.resident import inference_model
    lm = inference_model(ref, options.dtype, options.attention, merge_dtype="float32")
    return HFLM(pretrained=lm, tokenizer=load_tokenizer(ref), batch_size=options.batch_size)


def selected_documents(positions: list[int], dataset: str, split: str) -> list[int] | None:
    """The document indices lm-eval scores, in ascending order; None when they are the whole split in order."""
    from frpo_bench.data import split_size
    chosen = sorted(positions)
    return None if chosen == list(range(split_size(dataset, split))) else chosen


def lm_eval_version() -> str:
    from importlib import metadata
    return metadata.version("lm_eval")



class LmEvalTaskEvaluator(EvaluatorBase):
    """What an evaluator that runs an lm-eval task on the model shares: its work."""

    @staticmethod
    def work(options: LmEvalOptions, shape: Shape) -> Work:
        return options.lm_eval_work(shape.prompts)
