"""EvalPlus's code sets (MBPP+, HumanEval+) as EvalPlus itself reads them: its release files (task prompt, entry
point, canonical solution, base and extra test inputs), which the `evalplus` package downloads from its GitHub
releases at the version it pins. A local copy, $FRPO_BENCH_DATA/evalplus/<Name>-<version>.jsonl, is read first;
else the package's own download (through its cache, so once fetched it reads offline too).

The release files are not on the Hub in this form (the Hub's evalplus/mbppplus holds test scripts, not inputs),
and their sha256 is not pinned here: a local copy's own sha256 enters the keys (data.content_of), and every score
records the md5 EvalPlus computes of the file it read.
"""
from __future__ import annotations

import os
from pathlib import Path

from frpo_bench.data.catalog import EVALPLUS_RELEASES as RELEASES


def local_copy(dataset: str) -> Path | None:
    from frpo_bench.data import get, local_hub_files
    found = local_hub_files(get(dataset))
    return found[0] if found else None


def release_path(dataset: str) -> Path:
    """The release file: the local copy, else EvalPlus's own (downloaded once into its cache at its pinned URL)."""
    local = local_copy(dataset)
    if local is not None:
        return local
    from evalplus.data.utils import get_dataset_metadata, make_cache

    from frpo_bench.data import offline
    from frpo_bench.errors import ConfigError, error_summary
    name, version, _ = RELEASES[dataset]
    url, cached = get_dataset_metadata(name, version, mini=False)
    if not os.path.exists(cached):
        problem = "is not there, and downloads are off" if offline() else ""
        if not problem:
            try:
                make_cache(url, cached)
            except OSError as err:
                problem = f"could not be downloaded ({error_summary(err)})"
        if problem:
            raise ConfigError(f"dataset {dataset}", f"{name}-{version}.jsonl",
                              f"{problem}; looked in $FRPO_BENCH_DATA/evalplus/ and EvalPlus's cache ({cached})",
                              f"put the release file ({url}, unzipped) in $FRPO_BENCH_DATA/evalplus/, or run once "
                              "with network access")
    return Path(cached)


def problems(dataset: str) -> dict[str, dict]:
    """EvalPlus's problems, read by EvalPlus's own loader (inputs deserialised as it does) from `release_path`."""
    path = str(release_path(dataset))
    if RELEASES[dataset][2] == "mbpp":
        import evalplus.data.mbpp as loader
        read, attribute = loader.get_mbpp_plus, "MBPP_OVERRIDE_PATH"
    else:
        import evalplus.data.humaneval as loader
        read, attribute = loader.get_human_eval_plus, "HUMANEVAL_OVERRIDE_PATH"
    previous = getattr(loader, attribute)
    setattr(loader, attribute, path)  # the loader's own override, read per call (its env var is read at import)
    try:
        return read(version=RELEASES[dataset][1])
    finally:
        setattr(loader, attribute, previous)


def rows(dataset: str) -> list[dict]:
    """Rows in release order: `id` (task id), `prompt` (the task's prompt), `entry_point`."""
    return [{"id": task_id, "prompt": task["prompt"], "entry_point": task["entry_point"]}
            for task_id, task in problems(dataset).items()]


def mbpp_plus(files: dict, split: str) -> list[dict]:
    return rows("mbpp_plus")


def humaneval_plus(files: dict, split: str) -> list[dict]:
    return rows("humaneval_plus")
