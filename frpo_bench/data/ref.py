"""A reference to rows of a registered dataset, as recipes and component options write it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from frpo_bench.errors import ConfigError
from frpo_bench.typed import check_positive, opt


@dataclass
class DataRef:
    dataset: str = opt("", help="registered dataset name (see `frpo-bench ls`); with `file`, the name results give "
                               "that file's rows (default: the file's name without its extension)")
    split: str = opt("train", help="split of that dataset: train or eval (held out), or a dataset-specific subset")
    n: Optional[int] = opt(None, help="use the first n rows after a seeded shuffle (all rows if unset)")
    skip: int = opt(0, omit_if_default=True, help="skip this many shuffled rows first: a slice held out from "
                                                  "another ref's first n (e.g. train on n: 2000, evaluate on skip: 2000, n: 200)")
    head: Optional[int] = opt(None, omit_if_default=True, help="only the split's first `head` rows in file order, "
                              "before any shuffle (the FRPO reference's HarmBench draws from the first 200 behaviours)")
    draw_seed: Optional[int] = opt(None, omit_if_default=True, help="draw as the FRPO reference does: Python's "
                                   "random.Random(draw_seed).shuffle of the rows in file order, then skip and n; "
                                   "unset: the harness's own seeded order")
    file: Optional[str] = opt(None, omit_if_default=True, in_key=False,
                              help="your own file instead of a registered dataset: .jsonl, .csv or .parquet, one row per "
                                   "prompt (or prompt/response pair); its sha256 enters the cache keys, its path does not")
    columns: dict[str, str] = opt({}, omit_if_default=True, help="with file: the file's column for each field, e.g. "
                                  "{prompt: question, response: answer}; a field not named is read from its own name")
    kind: str = opt("prompts", omit_if_default=True, help="with file: prompts (prompt; optional id, category, context) "
                    "or pairs (prompt and response: fine-tuning data)")
    harmful: bool = opt(False, omit_if_default=True, help="with file: the prompts are harmful requests (refusing "
                        "them is safe); false: benign ones (refusing them is over-refusal)")

    def validate(self, path: str) -> None:
        from frpo_bench.data import check_ref
        if self.file is not None:
            self.validate_file(path)
        elif self.columns or self.kind != "prompts" or self.harmful:
            raise ConfigError(path, "columns/kind/harmful", "describe a file, and this ref names no file",
                              "add file: <path>, or drop them (a registered dataset knows its own)")
        elif not self.dataset:
            raise ConfigError(f"{path}.dataset", self.dataset, "is required",
                              "name a registered dataset (see `frpo-bench ls`) or give file: <path>")
        else:
            check_ref(self, path)
        if self.n is not None:
            check_positive(self, path, "n")
        if self.head is not None:
            check_positive(self, path, "head")
        if self.skip < 0:
            raise ConfigError(f"{path}.skip", self.skip, "is negative", "use 0 or a positive row count")

    def validate_file(self, path: str) -> None:
        from frpo_bench.data import names
        from frpo_bench.data.local import FIELDS, check_format, mapping_fields
        check_format(self.file, f"{path}.file")
        if self.kind not in FIELDS:
            raise ConfigError(f"{path}.kind", self.kind, "is not a kind of file", f"use one of {', '.join(FIELDS)}")
        mapping_fields(self.kind, self.columns, path)
        if self.split not in ("train", "all"):  # train: the default, left unset
            raise ConfigError(f"{path}.split", self.split, "is not a split of a file (a file is one split: all)",
                              "leave split out, and hold rows out with n and skip")
        self.split = "all"
        self.file = str(Path(self.file).expanduser().resolve())  # stages may run elsewhere (Ray): not in keys
        self.dataset = self.dataset or Path(self.file).stem
        if self.dataset in names():
            raise ConfigError(f"{path}.dataset", self.dataset, "is the name of a registered dataset",
                              "give your file's rows another name (dataset: my_prompts)")
