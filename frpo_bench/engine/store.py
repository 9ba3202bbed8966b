"""Content-addressed artifacts: a key is the sha256 of the canonical JSON of what changes a
stage's output; a directory is built under a temporary name and renamed into place, with its
marker written last, so a directory without the marker is never trusted.

What is read back is checked: stage.json lists every file of the artifact with its size and sha256, and
the marker holds stage.json's own sha256. Every look at an artifact checks that chain, every file's size,
and the hash of every file up to VERIFY_HASH_BYTES (records, completions, per-sample scores, adapters);
larger files (full weights) are hashed by `verify(deep=True)` (`frpo-bench verify`, and whenever loading
them fails). A corrupt artifact is reported by name and rebuilt, never used."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from frpo_bench.files import (
    MARKER,
    canonical_json,
    default_cache_dir,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)

KEY_VERSION = 1  # bump when a stage's output format or meaning changes
RECORD = "stage.json"  # what the stage is, how it ran, and its files' sizes and hashes
INCOMPLETE = "INCOMPLETE"  # a result this run may use but no later run may reuse (its reason inside)
WARM = ".warm"  # trainer states of runs stopped early, for the same run's next stop to resume from
VERIFY_HASH_BYTES = 16 << 20  # files up to this size are hashed on every look; larger ones by verify(deep=True)
HOLDER_BYTES = 128  # a lock file's first bytes name its holder
HEX64 = re.compile(r"[0-9a-f]{64}")


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
        """None if the marked artifact is intact, else what is wrong, naming the file. The marker must hold the
        key and its record's sha256; the record must list every file the folder holds, none of them a link."""
        folder = self.path(kind, key)
        if folder.is_symlink() or folder.parent.is_symlink():
            linked = folder if folder.is_symlink() else folder.parent
            return f"{linked} is a symbolic link: a store holds its artifacts itself"
        try:
            marker = (folder / MARKER).read_text(encoding="utf-8")
            problem = marker_problem(marker, key)
            if problem:
                return f"{folder / MARKER} {problem}"
            if sha256_file(folder / RECORD) != marker.split()[1]:
                return f"{folder / RECORD} does not match the hash its marker recorded"
            files = json.loads((folder / RECORD).read_text(encoding="utf-8"))["files"]
            present = {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.name not in (RECORD, MARKER)}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            return f"{folder}: its marker or {RECORD} is unreadable ({err.__class__.__name__})"
        for name, path in sorted(present.items()):
            if path.is_symlink():
                return f"{path} is a symbolic link: a store holds its files itself"
            if path.is_file() and name not in files:
                return f"{path} is not among the files its {RECORD} lists"
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
        folder = self.path(kind, key)
        remove_tree(folder.parent if folder.parent.is_symlink() else folder)  # a linked kind folder: the link only

    @contextmanager
    def lock(self, kind: str, key: str, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the key's lock (waiting for another holder, and saying so through `waiting`). Holding it, no
        live process is building this key, so the leftovers of dead builds are removed on the way in."""
        fd = open_lock_file(self.root, kind, f"{key[:20]}.lock")  # beside, not among, the artifacts
        with os.fdopen(fd, "r+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if waiting:
                    holder = os.pread(fd, HOLDER_BYTES, 0).decode("utf-8", "replace").split("\n")[0].strip()
                    waiting(f"waiting for {holder or 'another process'}, which is building it")
                fcntl.lockf(handle, fcntl.LOCK_EX)
            # the holder's name over the first bytes, in place: a lock file is never truncated
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}"[:HOLDER_BYTES - 1].ljust(HOLDER_BYTES - 1)
                      .encode() + b"\n", 0)
            try:
                self.remove_dead_builds(kind, key)
                yield
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)

    def remove_dead_builds(self, kind: str, key: str) -> None:
        """Temporary build directories of this key, and an unmarked directory at its place (both left by
        a killed process). Only call with the key's lock held."""
        final = self.path(kind, key)
        if final.parent.is_symlink():
            return  # never cleaned through a link (building refuses it)
        for leftover in final.parent.glob(f".{final.name}.building.*"):
            remove_tree(leftover)
        if final.is_symlink() or (final.exists() and not (final / MARKER).is_file()):
            remove_tree(final)

    @contextmanager
    def building(self, kind: str, key: str, spec: dict) -> Iterator[Path]:
        """Yield a temporary directory; on success it becomes the artifact, on failure it vanishes. Hold the
        key's lock around it; should the artifact exist anyway, the new build is discarded, not swapped in."""
        final = self.path(kind, key)
        if final.parent.is_symlink():  # a build would land wherever the link points
            raise StoreTampered(f"{final.parent} is a symbolic link: a store holds its artifacts itself (remove the "
                                "link; its target is not touched)")
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
            if final.exists() or final.is_symlink():  # an unmarked leftover of an interrupted build, or a link
                remove_tree(final)
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


def marker_problem(text: str, key: str) -> str | None:
    """None for a marker of the one format ("<key> <sha256 of the record>"), else what is wrong with it."""
    words = text.split()
    if len(words) != 2 or not words[0].startswith(key[:20]) or not HEX64.fullmatch(words[1]):
        return ("holds no record hash (a store from before file lists, or a tampered marker): `frpo-bench verify "
                "--upgrade` records the hashes of old artifacts you trust, or the run builds it again")
    return None


def remove_tree(path: Path) -> None:
    """Remove an artifact folder; a symbolic link is unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def open_lock_file(root: Path, kind: str, name: str) -> int:
    """A descriptor of root/.locks/<kind>/<name>, created if absent. No component below the root is followed
    if it is a link, and the file must be a regular file with one link: in a store shared between users, a
    planted link or hard link must not make a run write someone else's file."""
    root.mkdir(parents=True, exist_ok=True)
    opened: list[int] = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for folder in (".locks", kind):
            try:
                os.mkdir(folder, 0o777, dir_fd=opened[-1])
            except FileExistsError:
                pass
            opened.append(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=opened[-1]))
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=opened[-1])
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StoreTampered(f"{root / '.locks' / kind / name}: a lock's path holds a symbolic link; a store's "
                                f".locks/ holds only folders and regular files (remove the link)") from err
        raise
    finally:
        for folder_fd in opened:
            os.close(folder_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise StoreTampered(f"{root / '.locks' / kind / name}: a lock must be a regular file with one link "
                            f"(it has {info.st_nlink}); remove it")
    return fd


class StoreTampered(OSError):
    """A store's file was replaced by something a run must not write through (a link)."""


def upgrade_markers(store: Store, report=print) -> int:
    """Give every artifact whose marker holds no record hash the one marker format, trusting its files as they
    are now (their JSON records must parse). Returns how many were upgraded."""
    upgraded = 0
    for kind, prefix in store.artifacts():
        folder = store.path(kind, prefix)
        if folder.is_symlink():
            continue
        text = (folder / MARKER).read_text(encoding="utf-8", errors="replace")
        if not marker_problem(text, prefix):
            continue
        problem = check_records_parse(folder)
        if problem:
            report(f"not upgraded: {kind}/{prefix}: {problem}")
            continue
        record_path = folder / RECORD
        record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {"kind": kind}
        key = (text.split() or [record.get("key", prefix)])[0]
        write_json_atomic(record_path, {**record, "key": key, "files": file_list(folder)})
        write_text_atomic(folder / MARKER, f"{key} {sha256_file(record_path)}\n")
        report(f"upgraded {kind}/{prefix}: its files' hashes recorded as they are now")
        upgraded += 1
    return upgraded


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
