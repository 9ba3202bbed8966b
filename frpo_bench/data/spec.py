"""What a registered dataset is: its canonical source, pinned files and parser (no I/O here)."""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PinnedFile:
    name: str  # file name inside the dataset's override folder
    url: str  # canonical, pinned to a commit
    sha256: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str  # prompts | pairs | math | code
    description: str
    source: str  # canonical source, human-readable (repo@commit or Hub id)
    license: str
    parser: str  # "module:function" turning (files, split) into rows
    splits: tuple[str, ...]
    folder: str = ""  # folder name under $FRPO_BENCH_DATA
    files: tuple[PinnedFile, ...] = ()
    harmful: bool = False
    revision: str = ""  # commit or version; shown in every leaderboard row
    hub: str = ""  # a Hub dataset repo read at `revision` (its parquet files), instead of pinned files
    meta: dict = field(default_factory=dict, hash=False)

    @property
    def content_id(self) -> str:
        """Identity of the bytes this dataset reads (part of stage keys): pinned file hashes, a Hub
        repo at its revision, a user's file by its sha256 and column mapping, or, for generated sets, a hash
        of every row they generate."""
        if "content" in self.meta:
            return self.meta["content"]
        if self.hub:
            return f"hf:{self.hub}@{self.revision}"
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


def rows_hash(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
