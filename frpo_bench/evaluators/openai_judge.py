"""Chat requests to any OpenAI-compatible judge: bounded concurrency, retries with backoff on
timeouts, connection errors, 429 and 5xx, an on-disk answer cache, and a token tally.

The API key is read from an environment variable at call time and never stored or logged.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from frpo_bench.files import canonical_json, default_cache_dir, write_json_atomic

RETRY_STATUS = {408, 409, 429}  # and every 5xx


@dataclass
class JudgeRequest:
    system: Optional[str]
    user: str
    function: Optional[dict] = None  # a function the judge must call (OpenAI tools); its arguments are the answer

    def messages(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + \
               [{"role": "user", "content": self.user}]


@dataclass
class Tally:
    requests: int = 0  # HTTP requests sent, retries included
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def to_json(self, prompt_price: float = 0.0, completion_price: float = 0.0) -> dict:
        """Prices are per million tokens; cost counts only answers fetched in this run (not cache hits)."""
        cost = (self.prompt_tokens * prompt_price + self.completion_tokens * completion_price) / 1e6
        return {"requests": self.requests, "cache_hits": self.cache_hits, "retries": self.retries,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "cost": round(cost, 6)}


def is_retryable(err: Exception) -> bool:
    import openai
    if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    status = getattr(err, "status_code", None)
    return isinstance(err, openai.APIStatusError) and (status in RETRY_STATUS or (status or 0) >= 500)


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 20.0) -> float:
    """Exponential backoff: 1, 2, 4, 8, 16, 20, 20, ... seconds."""
    return min(cap, base * 2 ** attempt)


def retry_after_seconds(err: Exception) -> Optional[float]:
    """What the server asked for (Retry-After in seconds or as an HTTP date, or retry-after-ms), else None."""
    from email.utils import parsedate_to_datetime
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        if value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class JudgeError(RuntimeError):
    """The judge endpoint failed in a way retrying does not fix, or for longer than a request may take."""


def describe_failure(err: Exception) -> str:
    """What went wrong, in the judge's terms (an answer that is not JSON is the endpoint's fault, not ours)."""
    if isinstance(err, json.JSONDecodeError) or "JSONDecodeError" in repr(err.__cause__ or err.__context__ or ""):
        return f"its answer was not JSON ({err}): is base_url an OpenAI-compatible /v1 endpoint?"
    status = getattr(err, "status_code", None)
    return f"{err.__class__.__name__}" + (f" (HTTP {status})" if status else "") + f": {str(err)[:200]}"


def read_cached_answer(path: Path) -> Optional[dict]:
    """A cached answer, or None when there is none or it is unreadable (then it is asked again, and rewritten)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("text"), str) else None


def answer_text(message, request: JudgeRequest) -> str:
    """The judge's answer: its text, or with a function to call, the arguments of its call of it ("" if none)."""
    if not request.function:
        return message.content or ""
    calls = [c for c in (message.tool_calls or []) if c.function.name == request.function["name"]]
    return calls[0].function.arguments if calls else ""


class OpenAIJudge:
    """One judge endpoint and model, temperature and token limit fixed; answers cached by content."""

    def __init__(self, base_url: Optional[str], model: str, api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.0, max_tokens: int = 1024, max_concurrency: int = 8,
                 max_retries: int = 8, timeout: float = 60.0, cache_dir: Optional[Path] = None,
                 identity: Optional[str] = None, report: Callable[[str], None] | None = None,
                 deadline: float = 300.0):
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        # who answers: the endpoint and model name unless told better (a locally served judge is named by
        # its weights, since its port and served name are the same for every model it serves)
        self.identity = identity or f"{base_url or 'openai'}:{model}"
        self.temperature, self.max_tokens = temperature, max_tokens
        self.max_concurrency, self.max_retries, self.timeout = max_concurrency, max_retries, timeout
        self.deadline = deadline  # seconds one request may take in all, retries and waits included
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "judge"
        self.report = report or (lambda msg: None)
        self.tally = Tally()
        self._client = None

    def client(self):
        if self._client is None:
            from openai import OpenAI
            key = os.environ.get(self.api_key_env) or "EMPTY"  # local servers accept any key
            self._client = OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.timeout)
        return self._client

    def request_body(self, request: JudgeRequest) -> dict:
        """Exactly what is sent (minus the key): recorded with every answer."""
        body = {"model": self.model, "messages": request.messages(), "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        if request.function:
            body["tools"] = [{"type": "function", "function": request.function}]
            body["tool_choice"] = {"type": "function", "function": {"name": request.function["name"]}}
        return body

    def cache_key(self, request: JudgeRequest) -> str:
        """The judge's identity and the exact request: two judges never share an answer."""
        keyed = {"judge": self.identity, "request": self.request_body(request)}
        return hashlib.sha256(canonical_json(keyed).encode()).hexdigest()

    def ask(self, request: JudgeRequest, accept: Callable[[str], bool] | None = None) -> dict:
        """{"text", "cached", "usage"} for one request, from the cache or the endpoint. Only answers that
        `accept` takes (e.g. that parse) are cached, and a cached one it refuses is asked again: a judge's
        malformed answer is never reused."""
        path = self.cache_dir / self.cache_key(request)[:2] / f"{self.cache_key(request)}.json"
        cached = read_cached_answer(path)
        if cached is not None and (accept is None or accept(cached["text"])):
            self.tally.add(cache_hits=1)
            return {**cached, "cached": True}
        response = self.send(request)
        usage = response.usage
        answer = {"text": answer_text(response.choices[0].message, request),
                  "usage": {"prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                            "completion_tokens": getattr(usage, "completion_tokens", 0) or 0}}
        self.tally.add(**answer["usage"])
        if accept is None or accept(answer["text"]):
            write_json_atomic(path, answer)
        return {**answer, "cached": False}

    def send(self, request: JudgeRequest):
        """One chat completion, retried with backoff (or the server's Retry-After) on transient failures,
        within `deadline` seconds in all; any other failure is a JudgeError naming this judge."""
        started = time.monotonic()
        for attempt in range(self.max_retries + 1):
            left = self.deadline - (time.monotonic() - started)
            if left <= 0:
                break
            try:
                self.tally.add(requests=1)
                return self.client().with_options(timeout=min(self.timeout, left)).chat.completions.create(
                    **self.request_body(request))
            except Exception as err:  # noqa: BLE001 - classified below; every path names the judge
                if not is_retryable(err):
                    raise JudgeError(f"judge {self.identity} failed: {describe_failure(err)}") from err
                if attempt == self.max_retries:
                    raise JudgeError(f"judge {self.identity} failed {attempt + 1} times, last: "
                                     f"{describe_failure(err)}") from err
                asked = retry_after_seconds(err)
                wait = backoff_seconds(attempt) if asked is None else asked
                left = self.deadline - (time.monotonic() - started)
                if wait >= left:
                    break
                self.tally.add(retries=1)
                self.report(f"judge request failed ({describe_failure(err)}); retry {attempt + 1}/"
                            f"{self.max_retries} in {wait:.0f}s" + (" (the server's Retry-After)" if asked is not None else ""))
                time.sleep(wait)
        raise JudgeError(f"judge {self.identity} gave no answer within {self.deadline:.0f}s (the deadline option; "
                         f"each attempt waits at most {self.timeout:.0f}s): is the endpoint up and serving "
                         f"'{self.model}'?")

    def ask_all(self, requests: list[JudgeRequest], accept: Callable[[str], bool] | None = None) -> list[dict]:
        """Answers in input order; at most max_concurrency requests in flight."""
        done = [0]
        start = time.time()

        def one(request: JudgeRequest) -> dict:
            answer = self.ask(request, accept)
            done[0] += 1
            if done[0] % 10 == 0 or done[0] == len(requests):
                self.report(f"judged {done[0]}/{len(requests)} ({time.time() - start:.0f}s)")
            return answer

        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            return list(pool.map(one, requests))
