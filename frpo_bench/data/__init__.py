"""Dataset registry: name -> canonical source (pinned URL + sha256), local override, parser.

Row shapes, by `kind`:
  prompts: {"id", "prompt", "category", "context"}     (requests to answer; `harmful` says which side)
  pairs:   {"prompt", "response"}                       (supervised fine-tuning)
  math:    {"question", "answer"}                       (GSM8K format: answer ends with "#### N")

Where files are looked for, in order: $FRPO_BENCH_DATA/<folder>/<file>, the download
cache, then the pinned URL (skipped when HF_HUB_OFFLINE or FRPO_BENCH_OFFLINE is set).
Every file is checked against its sha256, so a number always names the exact data. A DataRef with
`file:` reads a user's own file instead (data/local.py), identified by its sha256.
"""
from __future__ import annotations

import functools
import hashlib
import os
import random
import urllib.request
from pathlib import Path

from frpo_bench.data.spec import DatasetSpec, PinnedFile
from frpo_bench.errors import ConfigError, error_summary
from frpo_bench.files import sha256_file

DATA_ENV = "FRPO_BENCH_DATA"
_LOCAL: dict[str, DatasetSpec] = {}  # name -> a user's file read in this process (spec_for), for lookups by name


def _registry() -> dict[str, DatasetSpec]:
    from frpo_bench.data.catalog import CATALOG
    return {spec.name: spec for spec in CATALOG}


def get(name: str) -> DatasetSpec:
    return _LOCAL[name] if name in _LOCAL else _registry()[name]


def spec_for(ref) -> DatasetSpec:
    """The dataset a DataRef reads: a registered one, or its own file (read, checked and hashed here)."""
    if not ref.file:
        return get(ref.dataset)
    from frpo_bench.data.local import local_spec
    try:
        stat = os.stat(ref.file)
    except OSError:
        raise ConfigError("prompt file", ref.file, "does not exist", "give the path of a file on this machine") from None
    spec = local_spec(ref.file, stat.st_size, stat.st_mtime_ns, ref.kind, tuple(sorted(ref.columns.items())),
                      ref.harmful, ref.dataset)
    _LOCAL[spec.name] = spec  # (one name, two files in one recipe: preflight stops it)
    return spec


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


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "FRPO_BENCH_OFFLINE"))


def download_cache() -> Path:
    from frpo_bench.files import default_cache_dir
    return default_cache_dir() / "downloads"


def locate(spec: DatasetSpec, pinned: PinnedFile) -> Path:
    """Find (or download) one pinned file and verify its sha256; a clear error otherwise."""
    looked = []
    override = os.environ.get(DATA_ENV)
    candidates = []
    if override:
        candidates.append(Path(override) / spec.folder / pinned.name)
    cached = download_cache() / pinned.sha256 / pinned.name
    candidates.append(cached)
    for path in candidates:
        looked.append(str(path))
        if path.is_file():
            actual = sha256_file(path)
            if actual != pinned.sha256:
                raise ConfigError(f"dataset {spec.name}", str(path), f"has sha256 {actual[:12]}..., expected {pinned.sha256[:12]}...",
                                  "replace it with the pinned upstream file; results on other bytes are not comparable")
            return path
    problem = "is not available offline" if offline() else "could not be downloaded"
    if not offline():
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
            problem = f"could not be downloaded ({error_summary(err)})"
    raise ConfigError(f"dataset {spec.name}", pinned.name, f"{problem}; looked in {', '.join(looked)} and {pinned.url}",
                      f"set {DATA_ENV} to a folder holding {spec.folder}/{pinned.name} (sha256 {pinned.sha256[:12]}...), "
                      "or run once with network access")


HUB_FILES = ("*.parquet", "*.jsonl")  # a Hub dataset's data files (its parser reads the kind it has)


def hub_files(spec: DatasetSpec) -> dict[str, Path]:
    """The data files (parquet, or JSON lines) of a Hub dataset at its pinned revision: $FRPO_BENCH_DATA/<folder>/ if
    there, else the Hub (through its local cache, so once downloaded it reads offline too)."""
    local = local_hub_files(spec)
    return {p.name: p for p in local} if local else hub_snapshot(spec)


@functools.lru_cache(maxsize=None)
def hub_snapshot(spec: DatasetSpec) -> dict[str, Path]:
    try:
        from huggingface_hub import snapshot_download
        root = Path(snapshot_download(spec.hub, repo_type="dataset", revision=spec.revision,
                                      allow_patterns=[*HUB_FILES, *(f"**/{p}" for p in HUB_FILES)]))
    except Exception as err:  # noqa: BLE001 - offline, unknown revision, no access: one clear error
        raise ConfigError(f"dataset {spec.name}", f"{spec.hub}@{spec.revision}",
                          f"could not be read from the Hub ({error_summary(err)})",
                          f"run once with network access (the Hub cache then serves it offline), or put its data "
                          f"files in {DATA_ENV}/{spec.folder}/") from None
    files = sorted(p for pattern in HUB_FILES for p in root.rglob(pattern))
    if not files:
        raise ConfigError(f"dataset {spec.name}", f"{spec.hub}@{spec.revision}", "has no parquet or JSON-lines files",
                          "pin a revision that has them")
    return {p.name: p for p in files}


def content_of(ref) -> str:
    """What a DataRef's rows are made of, for cache keys: its dataset's content id; for a Hub dataset read
    from local parquet files ($FRPO_BENCH_DATA/<folder>/), their sha256 too, since a local copy can differ."""
    spec = spec_for(ref)
    local = local_hub_files(spec) if spec.hub or spec.meta.get("local_file") else []
    if not local:
        return spec.content_id
    states = tuple((path, path.stat().st_size, path.stat().st_mtime_ns) for path in local)
    return f"{spec.content_id}:local:{files_digest(states)[:16]}"


@functools.lru_cache(maxsize=None)
def files_digest(states: tuple[tuple[Path, int, int], ...]) -> str:
    """sha256 over files, once per file state (path, size, mtime)."""
    digest = hashlib.sha256()
    for path, _, _ in states:
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def local_hub_files(spec: DatasetSpec) -> list[Path]:
    """A Hub dataset's local data files, or a release file's local copy (meta `local_file`: data/evalplus_release)."""
    override = os.environ.get(DATA_ENV)
    if not override:
        return []
    if spec.meta.get("local_file"):
        copy = Path(override) / spec.folder / spec.meta["local_file"]
        return [copy] if copy.is_file() else []
    return sorted(p for pattern in HUB_FILES for p in (Path(override) / spec.folder).glob(pattern))


def load_rows(name: str, split: str, n: int | None = None, seed: int = 0, skip: int = 0) -> list[dict]:
    """Rows of a dataset split; with n (or skip), rows skip..skip+n of a shuffle seeded by (seed, name)."""
    return select_rows(name, split, n, seed, skip)[0]


def select_rows(name: str, split: str, n: int | None = None, seed: int = 0,
                skip: int = 0) -> tuple[list[dict], list[int]]:
    """The rows `load_rows` gives, and the position of each in the split's own order."""
    return spec_rows(get(name), split, n, seed, skip)


def spec_rows(spec: DatasetSpec, split: str, n: int | None = None, seed: int = 0, skip: int = 0,
              head: int | None = None, draw_seed: int | None = None) -> tuple[list[dict], list[int]]:
    rows = split_rows_of(spec, split)
    positions = list(range(len(rows) if head is None else min(head, len(rows))))
    if draw_seed is not None:  # the reference's draw: shuffling a list depends on its length only, not its items
        random.Random(draw_seed).shuffle(positions)
    elif n is not None or skip:
        random.Random(f"{seed}:{spec.name}:{split}").shuffle(positions)  # the permutation shuffling the rows would make
    if n is not None or skip:
        positions = positions[skip: None if n is None else skip + n]
    return [dict(rows[i]) for i in positions], positions


def split_rows_of(spec: DatasetSpec, split: str) -> tuple[dict, ...]:
    """Every row of a split, checked; parsed once per process for the same verified files."""
    if "rows" in spec.meta:  # a user's file, read once when its spec was made
        rows = tuple(spec.meta["rows"])
        from frpo_bench.data.texts import check_texts
        check_texts(rows, spec.name)
        return rows
    files = hub_files(spec) if spec.hub else {f.name: locate(spec, f) for f in spec.files}
    identity = tuple((name, str(path), *file_identity(path)) for name, path in sorted(files.items()))
    return parsed_split(spec, split, identity, tuple(files.items()))


def file_identity(path: Path) -> tuple[int, int, int]:
    """What changes when a file is replaced or rewritten: inode, size, modification time."""
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)
def parsed_split(spec: DatasetSpec, split: str, identity: tuple, files: tuple) -> tuple[dict, ...]:
    import importlib

    from frpo_bench.data.texts import check_texts
    module, func = spec.parser.split(":")
    try:
        rows = tuple(getattr(importlib.import_module(module), func)(dict(files), split))
    except ConfigError:  # the parser's own clear error (a release file it fetches itself is missing)
        raise
    except Exception as err:  # noqa: BLE001 - a damaged local copy (empty, not parquet, a missing column)
        raise ConfigError(f"dataset {spec.name}", ", ".join(str(p) for _, p in files),
                          f"could not be read as {spec.name} ({error_summary(err)})",
                          f"replace them with the dataset's own files ({spec.source})") from None
    check_texts(rows, spec.name)
    return rows


def ref_rows(ref) -> list[dict]:
    """The rows a DataRef selects."""
    return ref_selection(ref)[0]


def ref_selection(ref) -> tuple[list[dict], list[int]]:
    """The rows a DataRef selects, and their positions in the split."""
    return spec_rows(spec_for(ref), ref.split, ref.n, skip=ref.skip, head=ref.head, draw_seed=ref.draw_seed)


def preflight(refs) -> dict[str, str]:
    """Resolve every referenced dataset before compute, and check that each ref selects rows that exist;
    returns name -> content id."""
    found = {}
    for ref in refs:
        spec = spec_for(ref)
        for pinned in spec.files:
            locate(spec, pinned)
        if spec.hub:
            hub_files(spec)
        count = len(spec.meta["rows"]) if "rows" in spec.meta else split_size(ref.dataset, ref.split)
        count = count if ref.head is None else min(ref.head, count)
        if ref.skip >= count or (ref.n is not None and ref.skip + ref.n > count):
            asked = f"rows {ref.skip}..{ref.skip + ref.n if ref.n is not None else count}"
            raise ConfigError(f"dataset {ref.dataset}", f"split {ref.split}, n {ref.n}, skip {ref.skip}",
                              f"asks for {asked} of a split with {count} rows (a result on fewer prompts than "
                              "asked would be mislabelled)", f"use n + skip <= {count}")
        content = content_of(ref)
        if found.get(spec.name, content) != content:
            raise ConfigError("dataset", spec.name, "names two different files, or one file mapped two ways",
                              "give each its own name with dataset: <name>")
        found[spec.name] = content
    return found


@functools.lru_cache(maxsize=None)
def split_size(name: str, split: str) -> int:
    return len(load_rows(name, split))
