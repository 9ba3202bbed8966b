"""Dataset registry: name -> canonical source (pinned URL + sha256), local override, parser.

Row shapes, by `kind`:
  prompts: {"id", "prompt", "category", "context"}     (requests to answer; `harmful` says which side)
  pairs:   {"prompt", "response"}                       (supervised fine-tuning)
  math:    {"question", "answer"}                       (GSM8K format: answer ends with "#### N")

Where files are looked for, in order: $FRPO_BENCH_DATA/<folder>/<file>, the download
cache, then the pinned URL (skipped when HF_HUB_OFFLINE or FRPO_BENCH_OFFLINE is set).
Every file is checked against its sha256, so a number always names the exact data.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from frpo_bench.errors import ConfigError

DATA_ENV = "FRPO_BENCH_DATA"


@dataclass(frozen=True)
class PinnedFile:
    name: str  # file name inside the dataset's override folder
    url: str  # canonical, pinned to a commit
    sha256: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str  # prompts | pairs | math
    description: str
    source: str  # canonical source, human-readable (repo@commit or Hub id)
    license: str
    parser: str  # "module:function" turning (files, split) into rows
    splits: tuple[str, ...]
    folder: str = ""  # folder name under $FRPO_BENCH_DATA
    files: tuple[PinnedFile, ...] = ()
    harmful: bool = False
    revision: str = ""  # commit or version; shown in every leaderboard row
    meta: dict = field(default_factory=dict, hash=False)

    @property
    def content_id(self) -> str:
        """Identity of the bytes this dataset reads (part of stage keys): pinned file hashes,
        or, for generated sets, a hash of every row they generate."""
        if self.files:
            return ",".join(f.sha256 for f in self.files)
        return _generated_content_id(self.parser, self.revision, self.splits)


@functools.lru_cache(maxsize=None)
def _generated_content_id(parser: str, revision: str, splits: tuple[str, ...]) -> str:
    """Hash of every row a generated set yields; computed once per process (every stage key asks)."""
    import importlib
    module, func = parser.split(":")
    make = getattr(importlib.import_module(module), func)
    return f"{revision}:{rows_hash([make({}, split) for split in splits])[:16]}"


def _registry() -> dict[str, DatasetSpec]:
    from frpo_bench.data.catalog import CATALOG
    return {spec.name: spec for spec in CATALOG}


def get(name: str) -> DatasetSpec:
    return _registry()[name]


def names() -> list[str]:
    return sorted(_registry())


def check_ref(ref, path: str) -> None:
    """Validate a DataRef's dataset name and split without touching any file."""
    import difflib
    reg = _registry()
    if ref.dataset not in reg:
        close = difflib.get_close_matches(ref.dataset, reg, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"{path}.dataset", ref.dataset, "is not a registered dataset",
                          f"{hint}known: {', '.join(sorted(reg))}")
    spec = reg[ref.dataset]
    if ref.split not in spec.splits:
        raise ConfigError(f"{path}.split", ref.split, f"is not a split of dataset '{spec.name}'",
                          f"use one of {', '.join(spec.splits)}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "FRPO_BENCH_OFFLINE"))


def _download_cache() -> Path:
    from frpo_bench.store import default_cache_dir
    return default_cache_dir() / "downloads"


def locate(spec: DatasetSpec, pinned: PinnedFile) -> Path:
    """Find (or download) one pinned file and verify its sha256; a clear error otherwise."""
    looked = []
    override = os.environ.get(DATA_ENV)
    candidates = []
    if override:
        candidates.append(Path(override) / spec.folder / pinned.name)
    cached = _download_cache() / pinned.sha256 / pinned.name
    candidates.append(cached)
    for path in candidates:
        looked.append(str(path))
        if path.is_file():
            actual = sha256_file(path)
            if actual != pinned.sha256:
                raise ConfigError(f"dataset {spec.name}", str(path), f"has sha256 {actual[:12]}..., expected {pinned.sha256[:12]}...",
                                  "replace it with the pinned upstream file; results on other bytes are not comparable")
            return path
    problem = "is not available offline" if _offline() else "could not be downloaded"
    if not _offline():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".part")
            with urllib.request.urlopen(pinned.url, timeout=30) as resp, open(tmp, "wb") as out:
                out.write(resp.read())
            if sha256_file(tmp) == pinned.sha256:
                tmp.replace(cached)
                return cached
            tmp.unlink()
            problem = "downloaded with a different sha256"
        except OSError as err:
            problem = f"could not be downloaded ({err.__class__.__name__})"
    raise ConfigError(f"dataset {spec.name}", pinned.name, f"{problem}; looked in {', '.join(looked)} and {pinned.url}",
                      f"set {DATA_ENV} to a folder holding {spec.folder}/{pinned.name} (sha256 {pinned.sha256[:12]}...), "
                      "or run once with network access")


def load_rows(name: str, split: str, n: int | None = None, seed: int = 0, skip: int = 0) -> list[dict]:
    """Rows of a dataset split; with n (or skip), rows skip..skip+n of a shuffle seeded by (seed, name)."""
    import importlib
    spec = get(name)
    files = {f.name: locate(spec, f) for f in spec.files}
    module, func = spec.parser.split(":")
    rows = getattr(importlib.import_module(module), func)(files, split)
    if n is not None or skip:
        rows = list(rows)
        random.Random(f"{seed}:{name}:{split}").shuffle(rows)
        rows = rows[skip: None if n is None else skip + n]
    return rows


def ref_rows(ref) -> list[dict]:
    """The rows a DataRef selects."""
    return load_rows(ref.dataset, ref.split, ref.n, skip=ref.skip)


def preflight(refs) -> dict[str, str]:
    """Resolve every referenced dataset before compute; returns name -> content id."""
    found = {}
    for ref in refs:
        spec = get(ref.dataset)
        for pinned in spec.files:
            locate(spec, pinned)
        found[spec.name] = spec.content_id
    return found


def rows_hash(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
