"""Bottom-layer file helpers every floor may use: canonical JSON, atomic writes, the cache root,
and the marker that says a stored artifact is complete."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"  # written last into a stored artifact: its presence means complete
CACHE_ENV = "FRPO_BENCH_CACHE"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "frpo-bench"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make published results unreadable to others
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


RUN_FILES = ".frpo-bench-written"  # in a run directory: the files runs wrote there, the only ones they remove


def written_here(run_dir: Path) -> set[str]:
    """The paths (relative to run_dir) that frpo-bench wrote into run_dir; {} for a folder it never wrote."""
    try:
        names = json.loads((run_dir / RUN_FILES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def note_written(run_dir: Path, paths: list[Path], removed: tuple[Path, ...] = ()) -> None:
    """Add `paths` (and drop `removed`) in run_dir's list of the files runs wrote there."""
    names = written_here(run_dir) | {str(p.relative_to(run_dir)) for p in paths}
    names -= {str(p.relative_to(run_dir)) for p in removed}
    write_text_atomic(run_dir / RUN_FILES, json.dumps(sorted(names), indent=0) + "\n")


def remove_written(run_dir: Path, candidates: list[Path]) -> list[Path]:
    """Unlink those of `candidates` that a run wrote (never a file the user put there); returns them."""
    mine = written_here(run_dir)
    gone = [p for p in candidates if str(p.relative_to(run_dir)) in mine and (p.is_file() or p.is_symlink())]
    for path in gone:
        path.unlink()
    if gone:
        note_written(run_dir, [], tuple(gone))
    return gone
