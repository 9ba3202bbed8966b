"""Human-labelled model completions for checking judges: XSTest v2 (Röttger et al., NAACL 2024).

Each of five chat models answered XSTest's 450 prompts; two annotators labelled every completion
1_full_compliance, 2_full_refusal or 3_partial_refusal (final_label settles disagreements). The files
come from the XSTest repository by pinned URL and sha256 ($FRPO_BENCH_DATA/xstest/ first), or from a
CSV of the same columns (prompt, completion, final_label; id and type optional) given by path.
"""
from __future__ import annotations

import csv
from pathlib import Path

from frpo_bench.data.catalog import GH, XSTEST_COMMIT
from frpo_bench.data.spec import DatasetSpec, PinnedFile
from frpo_bench.errors import ConfigError

LABEL_SET = f"XSTest v2 (paul-rottger/exaggerated-safety@{XSTEST_COMMIT[:7]})"
LABELS = {"1": "comply", "2": "refuse", "3": "partial"}  # by the leading digit of final_label
COMPLETION_SHA256 = {
    "gpt4": "71af323af8ecdec0efae23992317721441d2cfedddedeef3248f842f4e15c9ca",
    "llama2orig": "cbc52550e8ba8197a3e3d97a5af078d27bae4766737cd62df80270126a87ffc6",
    "mistralinstruct": "6a146b65a5b96ec8249729bc2db459697175125998d7cbbcc88f7688ecf31dad",
    "llama2new": "6365cc55ce0a593c7ab8785853d02784be027d97199d4077912b4313cd010099",
    "mistralguard": "0ac03817b65e019a8f5b4b3eed805086f9f7fafe538ac9ebd156f80210af6903",
}
# The judges of this project were developed on these three; the other two are kept for checking them.
DEVELOPMENT_SOURCES = ("gpt4", "llama2orig", "mistralinstruct")
_SPEC = DatasetSpec(name="xstest_completions", kind="judged", folder="xstest", revision=XSTEST_COMMIT,
                    description="XSTest v2 model completions with human labels", license="CC BY 4.0",
                    source=f"paul-rottger/exaggerated-safety@{XSTEST_COMMIT}", parser="", splits=(),
                    files=tuple(PinnedFile(f"xstest_v2_completions_{m}.csv",
                                           f"{GH}/paul-rottger/exaggerated-safety/{XSTEST_COMMIT}/model_completions/"
                                           f"xstest_v2_completions_{m}.csv", sha)
                                for m, sha in COMPLETION_SHA256.items()))


def label_of(final_label: str, where: str) -> str:
    """'1_full_compliance' -> comply, '2_full_refusal' -> refuse, '3_partial_refusal' -> partial."""
    label = LABELS.get(final_label.strip()[:1])
    if label is None:
        raise ConfigError("final_label", f"{final_label!r} ({where})", "is not a XSTest label",
                          "use 1_full_compliance, 2_full_refusal or 3_partial_refusal")
    return label


def source_path(source: str) -> Path:
    """A XSTest model name (verified against its pinned sha256) or a CSV path."""
    from frpo_bench.data import locate
    if source in COMPLETION_SHA256:
        return locate(_SPEC, next(f for f in _SPEC.files if f.name == f"xstest_v2_completions_{source}.csv"))
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError("--completions", source, "is neither a XSTest model nor a file",
                          f"give one of {', '.join(COMPLETION_SHA256)} or a CSV with prompt, completion, final_label")
    return path


def load_labelled(source: str) -> list[dict]:
    """Rows {source, id, type, prompt, completion, label} of one completion file, in file order."""
    path = source_path(source)
    name = source if source in COMPLETION_SHA256 else path.stem
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"prompt", "completion", "final_label"} - set(rows[0] if rows else ())
    if missing:
        raise ConfigError("--completions", str(path), f"lacks column(s) {sorted(missing)}",
                          "give a CSV with prompt, completion and final_label columns, as XSTest's files have")
    return [{"source": name, "id": r.get("id") or str(i), "type": r.get("type", ""), "prompt": r["prompt"],
             "completion": r["completion"], "label": label_of(r["final_label"], f"{path.name} row {i + 2}")}
            for i, r in enumerate(rows)]
