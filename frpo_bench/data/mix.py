"""Training sets mixed from two sources (the poisoned-mix protocol: benign rows with a share of harmful ones)."""
from __future__ import annotations

import random


def poisoned_mix(benign: list[dict], harmful: list[dict], harmful_count: int, n: int, seed: int) -> list[dict]:
    """n rows: `harmful_count` drawn from `harmful`, the rest from `benign`, each without replacement, in a
    seeded shuffled order; every row says which source it came from (`poisoned`)."""
    benign_count = n - harmful_count
    for name, rows, wanted in (("harmful", harmful, harmful_count), ("benign", benign, benign_count)):
        if wanted > len(rows):
            raise ValueError(f"the poisoned mix needs {wanted} {name} rows and its data has {len(rows)}: lower n "
                             "or the share, or give more rows")
    rng = random.Random(seed)
    mix = ([{**row, "poisoned": True} for row in rng.sample(harmful, harmful_count)]
           + [{**row, "poisoned": False} for row in rng.sample(benign, benign_count)])
    rng.shuffle(mix)
    return mix
