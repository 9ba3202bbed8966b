"""What the trained defenses share to run on one CPU or under `accelerate launch` on many GPUs.

One process: the accelerator is a no-op wrapper and every stream yields what it yields alone,
so a single-process run computes exactly what it would without accelerate. N processes: each
takes every N-th batch of the shared stream (data parallel; gradients are averaged by DDP or
reduced by FSDP) and only the main process writes the trained weights.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator


def make_accelerator():
    from accelerate import Accelerator

    from frpo_bench.models.device import on_accelerator
    return Accelerator(cpu=not on_accelerator())


def launched_rank() -> tuple[int, int]:
    """(rank, world size) of this process as `accelerate launch`/torchrun set them; (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard(stream: Iterator, rank: int, world: int) -> Iterator:
    """Every world-th item of `stream`, starting at `rank`: disjoint data for each process."""
    while True:
        items = [next(stream) for _ in range(world)]
        yield items[rank]


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def save_trained(accelerator, model, out: Path, tokenizer=None) -> None:
    """Gather the (possibly sharded) weights and write them from the main process only."""
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(out, state_dict=state, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
