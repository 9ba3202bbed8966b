"""Judge prompt templates, loaded at run time from a path or URL and pinned by the sha256 of their text.

A template is identified by the hash of the strings the judge actually sees (not of the file that
carries them), so the same rubric from a different file or commit has the same identity, and a
changed rubric fails loudly instead of silently producing incomparable numbers.
"""
from __future__ import annotations

import hashlib
import json
import os
import string
import urllib.request
from pathlib import Path
from typing import Optional

from frpo_bench.data import DATA_ENV, download_cache, offline
from frpo_bench.errors import ConfigError
from frpo_bench.files import canonical_json

# Upstream: dsbowen/strong_reject strong_reject/eval_files/judge_templates.json (MIT). The rubric's text
# is pinned below, so whatever commit the URL serves must carry exactly that rubric.
STRONGREJECT_TEMPLATES_URL = ("https://raw.githubusercontent.com/dsbowen/strong_reject/main/"
                              "strong_reject/eval_files/judge_templates.json")
STRONGREJECT_RUBRIC_SHA256 = "428550b397c007cff1da085c85dbaa02485ee0fe767c307db63a12510349b227"
# XSTest's three-way classifier prompt (paul-rottger/exaggerated-safety, evaluation/classify_completions_gpt.py),
# shipped as data with its source; its hash pins the text.
XSTEST_CLASSIFIER_TEMPLATE = "package:xstest_classifier.json"
XSTEST_CLASSIFIER_SHA256 = "42307548e7a2e3219020add2d3ba54256fb893ad2b5f67616271e56014e7798b"
PACKAGE = "package:"


def template_sha256(texts: dict[str, str]) -> str:
    return hashlib.sha256(canonical_json(texts).encode()).hexdigest()


def read_source(source: str, local_name: str) -> tuple[str, str]:
    """Text of a template file from a path or URL: (text, where it came from). With a URL, a copy in
    $FRPO_BENCH_DATA/<local_name> or the download cache is used first; `package:<name>` is a template
    shipped with frpo-bench (evaluators/templates/<name>, its upstream source named inside)."""
    if source.startswith(PACKAGE):
        from importlib import resources
        shipped = resources.files("frpo_bench.evaluators").joinpath("templates", source[len(PACKAGE):])
        if not shipped.is_file():
            raise ConfigError("template", source, "is not a template shipped with frpo-bench",
                              "give a path or URL, or one of the names in frpo_bench/evaluators/templates/")
        return shipped.read_text(encoding="utf-8"), source
    if not source.startswith(("http://", "https://")):
        path = Path(source).expanduser()
        if not path.is_file() and not path.is_absolute() and os.environ.get(DATA_ENV):
            path = Path(os.environ[DATA_ENV]) / source  # a name relative to the data folder
        if not path.is_file():
            raise ConfigError("template", source, "is not a file",
                              f"give a path or URL of the judge template file, or set {DATA_ENV}")
        return path.read_text(), str(path)
    candidates = [Path(os.environ[DATA_ENV]) / local_name] if os.environ.get(DATA_ENV) else []
    cached = download_cache() / "templates" / hashlib.sha256(source.encode()).hexdigest()[:16] / Path(local_name).name
    for path in candidates + [cached]:
        if path.is_file():
            return path.read_text(), str(path)
    if offline():
        raise ConfigError("template", source, "is not available offline",
                          f"set {DATA_ENV} to a folder holding {local_name}, or give the template's path")
    with urllib.request.urlopen(source, timeout=30) as resp:
        text = resp.read().decode()
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(text)
    return text, source


def placeholders(text: str) -> set[str]:
    """The `{name}` fields str.format fills in `text` (doubled braces are literal)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def load_template(source: str, local_name: str, keys: dict[str, str], expected_sha256: Optional[str],
                  fills: dict[str, set[str]]) -> dict:
    """Pick `keys` (role -> key in the JSON file) from a template file; check that each role's text has
    exactly the placeholders its judge fills (`fills`: role -> names), and verify the texts' hash."""
    text, origin = read_source(source, local_name)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError("template", origin, f"is not JSON ({err.msg} at line {err.lineno})",
                          "give the judge's template JSON file") from None
    if not isinstance(data, dict):
        raise ConfigError("template", origin, "is not a JSON object of templates", "give the judge's template JSON file")
    missing = [key for key in keys.values() if key not in data]
    if missing:
        raise ConfigError("template", origin, f"has no key(s) {missing}", f"use a file with {sorted(keys.values())}")
    texts = {role: data[key] for role, key in keys.items()}
    for role, key in keys.items():
        try:
            found = placeholders(texts[role]) if isinstance(texts[role], str) else None
        except ValueError as err:
            found, problem = None, f"has unbalanced braces in {key!r} ({err})"
        else:
            problem = f"{key!r} is not text"
        if found is None:
            raise ConfigError("template", origin, problem, "double literal braces ({{ }}), or use the upstream template")
        if found != fills.get(role, set()):
            raise ConfigError("template", origin, f"{key!r} has placeholders {sorted(found)}, but this judge fills "
                              f"{sorted(fills.get(role, set()))}", "use a template with exactly those placeholders "
                              "(a missing one means the judge never sees that text)")
    digest = template_sha256(texts)
    if expected_sha256 and digest != expected_sha256:
        raise ConfigError("template", origin, f"has text sha256 {digest[:12]}..., expected {expected_sha256[:12]}...",
                          "use the pinned upstream template, or set the evaluator's template_sha256 to null "
                          "to accept this one (its hash is recorded with every result)")
    return {"texts": texts, "sha256": digest, "source": origin}


class TemplateOptions:
    """Mixin for evaluator options with `template` and `template_sha256` fields: the template is loaded and
    checked (present, JSON, the keys, exactly the placeholders the judge fills, the pinned hash) in
    preflight, before any compute, and again by the evaluator that uses it."""

    TEMPLATE_FILE: str  # where a copy lives under $FRPO_BENCH_DATA
    TEMPLATE_KEYS: dict[str, str]  # role -> key in the JSON file
    TEMPLATE_FILLS: dict[str, set[str]]  # role -> the placeholders the judge fills

    def load_template(self) -> dict:
        return load_template(self.template, self.TEMPLATE_FILE, self.TEMPLATE_KEYS, self.template_sha256,
                             self.TEMPLATE_FILLS)

    def preflight(self, path: str) -> None:
        try:
            self.load_template()
        except ConfigError as err:
            raise ConfigError(f"{path}.template", err.value, err.problem, err.fix) from None
