"""A reference to rows of a registered dataset, as recipes and component options write it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from frpo_bench.errors import ConfigError
from frpo_bench.typed import check_positive, opt


@dataclass
class DataRef:
    dataset: str = opt(help="registered dataset name (see `frpo-bench ls`)")
    split: str = opt("train", help="split of that dataset: train or eval (held out), or a dataset-specific subset")
    n: Optional[int] = opt(None, help="use the first n rows after a seeded shuffle (all rows if unset)")
    skip: int = opt(0, omit_if_default=True, help="skip this many shuffled rows first: a slice held out from "
                                                  "another ref's first n (e.g. train on n: 2000, evaluate on skip: 2000, n: 200)")

    def validate(self, path: str) -> None:
        from frpo_bench.data import check_ref
        check_ref(self, path)
        if self.n is not None:
            check_positive(self, path, "n")
        if self.skip < 0:
            raise ConfigError(f"{path}.skip", self.skip, "is negative", "use 0 or a positive row count")
