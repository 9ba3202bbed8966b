"""What every LLM judge over an OpenAI-compatible endpoint is configured by: the judge model and where it
answers (an endpoint, or a vLLM server the run starts for a model), the key's environment variable,
budgets and retries, and which of these change a score (the judge, its budget, a served judge's dtype)
and which are transport only (endpoint, key, concurrency, timeouts, prices)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from frpo_bench.evaluators.base import EvaluatorBase
from frpo_bench.evaluators.judge_templates import TemplateOptions
from frpo_bench.typed import Options as OptionsBase
from frpo_bench.typed import key_fields_except, opt
from frpo_bench.work import Shape, Work, api_work, local_judge_work

JUDGE_BATCH = 4  # a served judge's prompts per forward, for its peak memory

TRANSPORT = ("api_key_env", "max_concurrency", "max_retries", "timeout", "deadline", "prompt_price_per_mtok",
             "completion_price_per_mtok", "base_url", "serve_dtype")


@dataclass
class EndpointOptions(TemplateOptions, OptionsBase):
    """A judge's endpoint settings; each judge adds its `template` and `template_sha256` fields (and the
    TEMPLATE_* class constants of TemplateOptions)."""

    judge_model: str = opt("gpt-4o-mini", help="judge model name at the endpoint (upstream default: gpt-4o-mini)")
    base_url: Optional[str] = opt(None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1; null: OpenAI")
    api_key_env: str = opt("OPENAI_API_KEY", help="environment variable holding the API key (never logged)")
    serve_model: Optional[str] = opt(None, help="start a local vLLM server for this model (path or Hub id) for the "
                                                "run and judge with it; base_url and judge_model then follow it")
    serve_dtype: str = opt("auto", help="dtype of the served judge")
    max_tokens: int = opt(1024, help="judge answer budget in tokens")
    max_concurrency: int = opt(8, help="judge requests in flight at once")
    max_retries: int = opt(8, help="retries per request on timeouts, connection errors, 429 and 5xx")
    timeout: float = opt(60.0, help="seconds one judge request attempt may wait for its answer")
    deadline: float = opt(300.0, help="seconds one judge request may take in all, retries and Retry-After waits "
                                      "included; then the run stops naming the judge")
    prompt_price_per_mtok: float = opt(0.0, help="USD per million prompt tokens, for the cost tally")
    completion_price_per_mtok: float = opt(0.0, help="USD per million completion tokens, for the cost tally")

    def key_fields(self) -> dict:
        """What changes a score: the judge, its template and budget, never endpoints, keys or concurrency; a
        served judge's dtype too (other arithmetic, other verdicts), while it only matters then."""
        fields = key_fields_except(self, TRANSPORT)
        if self.serve_model:
            fields["serve_dtype"] = self.serve_dtype
        return fields

    def validate(self, path: str) -> None:
        from frpo_bench.errors import ConfigError
        from frpo_bench.typed import check_positive
        check_positive(self, path, "max_tokens", "max_concurrency", "timeout", "deadline")
        if self.base_url is not None and not is_http_url(self.base_url):
            raise ConfigError(f"{path}.base_url", self.base_url, "is not an http(s) URL with a host",
                              "write e.g. http://127.0.0.1:8000/v1, or null for OpenAI")

    def preflight(self, path: str) -> None:
        """The template (see TemplateOptions), and a key wherever the endpoint is not this machine's."""
        import os

        from frpo_bench.errors import ConfigError
        super().preflight(path)
        if self.serve_model is None and not is_local(self.base_url) and not os.environ.get(self.api_key_env):
            raise ConfigError(f"{path}.api_key_env", self.api_key_env, f"is not set, and the judge endpoint "
                              f"({self.base_url or 'OpenAI'}) is not on this machine",
                              f"export {self.api_key_env}=... (it is read at run time, never stored or logged)")

    def result_meta(self, template: dict, judge, base_url, records: list[dict], failed: str) -> dict:
        """A judged result's provenance: the judge's name, template hash and source, the unparsed count (records
        whose `score` is None) and the token tally; `incomplete` quotes the first unparsed answer, saying it
        `failed` (those answers were not cached: the next run asks them again instead of reusing this)."""
        name = self.judge_name(base_url)
        unparsed = [r["judge_output"] for r in records if r["score"] is None]
        meta = {"judge": name, "template": template["sha256"], "template_source": template["source"],
                "n_unparsed": len(unparsed),
                "tally": judge.tally.to_json(self.prompt_price_per_mtok, self.completion_price_per_mtok)}
        if unparsed:
            meta["incomplete"] = (f"{len(unparsed)} of {len(records)} answers of judge {name} {failed} "
                                  f"(first: {unparsed[0][:120]!r})")
        return meta

    def endpoint_work(self, prompts: int) -> Work:
        """Every prompt sent to the endpoint (`max_concurrency` at a time), or read by the judge served here."""
        if self.serve_model:
            return local_judge_work(self.serve_model, prompts, JUDGE_BATCH)
        return api_work(prompts, self.max_concurrency)

    def judge_identity(self) -> str:
        """What answers: a served model by its weights and dtype (its port changes every run), else the
        endpoint and model name. Cached judge answers are keyed by it."""
        if self.serve_model:
            return f"served:{self.serve_model}@{self.serve_dtype}"
        return f"{self.base_url or 'openai'}:{self.judge_model}"

    def judge_name(self, base_url: str | None) -> str:
        """How leaderboard rows name the judge: a served one by its weights and dtype."""
        if self.serve_model:
            return f"{self.serve_model}@local-vllm:{self.serve_dtype}"
        return f"{self.judge_model}@{base_url or 'openai'}"



def is_http_url(url: str) -> bool:
    from urllib.parse import urlparse
    parts = urlparse(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def is_local(url: Optional[str]) -> bool:
    """An endpoint on this machine (loopback), which needs no API key."""
    import ipaddress
    from urllib.parse import urlparse
    host = urlparse(url).hostname if url else None
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EndpointJudgeEvaluator(EvaluatorBase):
    """What an LLM judge over an endpoint shares: it reads completions, and its work is its requests."""

    needs_completions = True

    @staticmethod
    def work(options: EndpointOptions, shape: Shape) -> Work:
        return options.endpoint_work(shape.prompts)
