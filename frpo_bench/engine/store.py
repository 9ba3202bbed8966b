"""Content-addressed artifacts: a key is the sha256 of the canonical JSON of what changes a
stage's output; a directory is built under a temporary name and renamed into place, with its
marker written last, so a directory without the marker is never trusted.

What is read back is checked: stage.json lists every file of the artifact with its size and sha256, and
the marker holds stage.json's own sha256. Every look at an artifact checks that chain, every file's size,
and the hash of every file up to VERIFY_HASH_BYTES (records, completions, per-sample scores, adapters);
larger files (full weights) are hashed by `verify(deep=True)` (`frpo-bench verify`, and whenever loading
them fails). A corrupt artifact is reported by name and rebuilt, never used."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from frpo_bench.files import MARKER, canonical_json, default_cache_dir, sha256_file, write_json_atomic

KEY_VERSION = 1  # bump when a stage's output format or meaning changes
RECORD = "stage.json"  # what the stage is, how it ran, and its files' sizes and hashes
INCOMPLETE = "INCOMPLETE"  # a result this run may use but no later run may reuse (its reason inside)
WARM = ".warm"  # trainer states of runs stopped early, for the same run's next stop to resume from
VERIFY_HASH_BYTES = 16 << 20  # files up to this size are hashed on every look; larger ones by verify(deep=True)


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
        self._intact: set[str] = set()  # keys verified by this process
        self.corrupt: dict[str, str] = {}  # "kind/key" -> what was wrong, for the run to report

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:20]

    def has(self, kind: str, key: str) -> bool:
        """A complete, intact artifact that a run may reuse (checked once per process: see verify)."""
        if key in self._intact:
            return True
        folder = self.path(kind, key)
        if not (folder / MARKER).is_file() or (folder / INCOMPLETE).is_file():
            return False
        problem = self.verify(kind, key)
        if problem:
            self.corrupt[f"{kind}/{key[:20]}"] = problem
            return False
        self._intact.add(key)
        return True

    def present(self, stages) -> set[str]:
        """The keys of the stages (anything with .kind and .key) whose artifacts are complete and intact here."""
        return {s.key for s in stages if self.has(s.kind, s.key)}

    def verify(self, kind: str, key: str, deep: bool = False) -> str | None:
        """None if the marked artifact is intact, else what is wrong, naming the file. Artifacts from before
        file lists were recorded have their JSON records parsed instead."""
        folder = self.path(kind, key)
        try:
            marker = (folder / MARKER).read_text(encoding="utf-8").split()
            if len(marker) < 2:  # an old artifact: no file list to check against
                return check_records_parse(folder)
            if sha256_file(folder / RECORD) != marker[1]:
                return f"{folder / RECORD} does not match the hash its marker recorded"
            files = json.loads((folder / RECORD).read_text(encoding="utf-8"))["files"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            return f"{folder}: its marker or {RECORD} is unreadable ({err.__class__.__name__})"
        for name, (size, digest) in files.items():
            path = folder / name
            if not path.is_file():
                return f"{path} is missing"
            if path.stat().st_size != size:
                return f"{path} has {path.stat().st_size} bytes, {size} when built"
            if (deep or size <= VERIFY_HASH_BYTES) and sha256_file(path) != digest:
                return f"{path} does not match the sha256 it had when built"
        return None

    def artifacts(self) -> list[tuple[str, str]]:
        """(kind, key prefix) of every marked artifact in the store."""
        return sorted((marker.parent.parent.name, marker.parent.name) for marker in self.root.glob(f"*/*/{MARKER}")
                      if not marker.parent.name.startswith("."))

    def verify_all(self, repair: bool = False, report=print) -> dict[str, str]:
        """Hash every file of every artifact; with `repair`, remove the corrupt ones (the next run rebuilds them)."""
        bad = {}
        found = self.artifacts()
        for i, (kind, prefix) in enumerate(found, 1):
            problem = self.verify(kind, prefix, deep=True)
            if problem:
                bad[f"{kind}/{prefix}"] = problem
                report(f"[{i}/{len(found)}] CORRUPT {kind}/{prefix}: {problem}")
                if repair:
                    with self.lock(kind, prefix):
                        self.discard(kind, prefix, problem)
        return bad

    def discard(self, kind: str, key: str, why: str) -> None:
        """Remove a corrupt artifact (with the key's lock held), so that the stage is built again."""
        self._intact.discard(key)
        self.corrupt[f"{kind}/{key[:20]}"] = why
        shutil.rmtree(self.path(kind, key), ignore_errors=True)

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
            write_json_atomic(tmp / RECORD, {"kind": kind, "key": key, **spec, "built_by": built_by,
                                             "files": file_list(tmp)})
            # marker last: its presence means complete, and it pins the record that pins every file
            (tmp / MARKER).write_text(f"{key} {sha256_file(tmp / RECORD)}\n")
            if self.has(kind, key):
                shutil.rmtree(tmp)  # built meanwhile by a process that did not wait for the lock: keep the first
                return
            if final.exists():  # an unmarked leftover of an interrupted build
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def warm_state_dir(artifact: Path) -> Path:
    """Where a stage stopped early keeps its trainer state for a longer run of the same plan: beside the
    artifacts, not in one (a cache: deleting it costs retraining, never a result)."""
    return artifact.parent.parent / WARM / f"{artifact.parent.name}-{artifact.name}"


def file_list(folder: Path) -> dict[str, list]:
    """Every file under a finished build (but the record and marker written after it): [size, sha256]."""
    return {str(p.relative_to(folder)): [p.stat().st_size, sha256_file(p)] for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (RECORD, MARKER)}


def check_records_parse(folder: Path) -> str | None:
    """For an artifact without a file list: its JSON and JSON-lines records must at least parse."""
    for path in sorted(folder.rglob("*.json*")):
        if path.suffix not in (".json", ".jsonl") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            for line in (text.splitlines() if path.suffix == ".jsonl" else [text]):
                if line.strip():
                    json.loads(line)
        except (UnicodeDecodeError, ValueError) as err:
            return f"{path} is unreadable ({err.__class__.__name__})"
    return None
