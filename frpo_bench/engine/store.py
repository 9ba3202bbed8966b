"""Content-addressed artifacts: a key is the sha256 of the canonical JSON of what changes a
stage's output; a directory is built under a temporary name and renamed into place, with its
marker written last, so a directory without the marker is never trusted."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from frpo_bench.files import MARKER, canonical_json, default_cache_dir, write_json_atomic

KEY_VERSION = 1  # bump when a stage's output format or meaning changes


def stage_key(kind: str, fields: dict, parents: list[str]) -> str:
    payload = {"kind": kind, "key_version": KEY_VERSION, "fields": fields, "parents": parents}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


class Store:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_cache_dir()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:20]

    def has(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / MARKER).is_file()

    @contextmanager
    def building(self, kind: str, key: str, spec: dict) -> Iterator[Path]:
        """Yield a temporary directory; on success it becomes the artifact, on failure it vanishes."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building."))
        try:
            yield tmp
            write_json_atomic(tmp / "stage.json", {"kind": kind, "key": key, **spec})
            (tmp / MARKER).write_text(key + "\n")  # marker last: its presence means complete
            if final.exists():  # an unmarked leftover of an interrupted build
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
