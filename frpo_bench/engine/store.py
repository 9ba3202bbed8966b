"""Content-addressed artifacts: a key is the sha256 of the canonical JSON of what changes a
stage's output; a directory is built under a temporary name and renamed into place, with its
marker written last, so a directory without the marker is never trusted."""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from frpo_bench.files import MARKER, canonical_json, default_cache_dir, write_json_atomic

KEY_VERSION = 1  # bump when a stage's output format or meaning changes


def stage_key(kind: str, fields: dict, parents: list[str]) -> str:
    payload = {"kind": kind, "key_version": KEY_VERSION, "fields": fields, "parents": parents}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


class Store:
    """Artifacts by stage kind and key. Builders of one key take turns through a lock file of that key
    (root/.locks/; POSIX record locks, which NFSv4 and other shared filesystems honour), so several
    processes, or machines sharing the store, build a stage once; a finished artifact is never
    deleted or replaced."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else default_cache_dir()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:20]

    def has(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / MARKER).is_file()

    def present(self, stages) -> set[str]:
        """The keys of the stages (anything with .kind and .key) whose artifacts are complete here."""
        return {s.key for s in stages if self.has(s.kind, s.key)}

    @contextmanager
    def lock(self, kind: str, key: str, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the key's lock (waiting for another holder, and saying so through `waiting`). Holding it, no
        live process is building this key, so the leftovers of dead builds are removed on the way in."""
        lock_file = self.root / ".locks" / kind / f"{key[:20]}.lock"  # beside, not among, the artifacts
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_file, "a+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                if waiting:
                    waiting(f"waiting for {handle.read().strip() or 'another process'}, which is building it")
                fcntl.lockf(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            try:
                self.remove_dead_builds(kind, key)
                yield
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)

    def remove_dead_builds(self, kind: str, key: str) -> None:
        """Temporary build directories of this key, and an unmarked directory at its place (both left by
        a killed process). Only call with the key's lock held."""
        final = self.path(kind, key)
        for leftover in final.parent.glob(f".{final.name}.building.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if final.exists() and not (final / MARKER).is_file():
            shutil.rmtree(final, ignore_errors=True)

    @contextmanager
    def building(self, kind: str, key: str, spec: dict) -> Iterator[Path]:
        """Yield a temporary directory; on success it becomes the artifact, on failure it vanishes. Hold the
        key's lock around it; should the artifact exist anyway, the new build is discarded, not swapped in."""
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.building."))
        try:
            yield tmp
            built_by = {"pid": os.getpid(), "host": socket.gethostname(), "finished": time.time()}
            write_json_atomic(tmp / "stage.json", {"kind": kind, "key": key, **spec, "built_by": built_by})
            (tmp / MARKER).write_text(key + "\n")  # marker last: its presence means complete
            if self.has(kind, key):
                shutil.rmtree(tmp)  # built meanwhile by a process that did not wait for the lock: keep the first
                return
            if final.exists():  # an unmarked leftover of an interrupted build
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
