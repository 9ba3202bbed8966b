"""Training stages on their own and on several processes: two CPU processes (torchrun, gloo) train
the TAR and RR defenses of a tiny recipe; rank 0 alone writes the store."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from frpo_bench.config import load_recipe
from frpo_bench.engine.pipeline import select_stages
from frpo_bench.engine.plan import build_plan
from frpo_bench.engine.store import Store
from frpo_bench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DEFENSES = [
    "defenses.+={name: rr, seeds: [0], options: {harmful: [{dataset: demo_compliance, split: train, n: 8}], "
    "retain: [{dataset: demo_benign_sft, split: train, n: 8}], target_layers: [0.5, 1.0], steps: 2, batch_size: 2, "
    "max_length: 64, lora: {r: 4, alpha: 8}}}",
    "defenses.+={name: tar, seeds: [0], options: {adversary_data: [{dataset: demo_compliance, split: train, n: 8}], "
    "tamper_refusals: [{dataset: demo_refusals, split: train, n: 16}], tamper_compliance: [{dataset: demo_compliance, "
    "split: train, n: 16}], retain_data: [{dataset: demo_benign_sft, split: train, n: 8}], steps: 2, inner_steps: 1, "
    "inner_lrs: [1.0e-3], batch_size: 2, max_length: 64}}",
]


def cli(*args, launch: bool = False, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    # accelerate launch runs CPU processes only through mpirun; torchrun sets the same environment
    # (RANK, WORLD_SIZE, LOCAL_RANK) and accelerate's CPU state then joins a gloo process group
    prefix = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"] \
        if launch else [sys.executable]
    sets = [a for d in DEFENSES for a in ("--set", d)]
    return subprocess.run([*prefix, "-m", "frpo_bench", "run", "smoke", *sets, *args], env=env, capture_output=True,
                          text=True, timeout=900)


def test_stage_selection_takes_ancestors_and_refuses_uncached_ones_on_many_processes(tmp_path):
    recipe, _ = load_recipe("smoke", DEFENSES)
    _, stages = build_plan(recipe)
    store = Store(tmp_path / "store")
    chosen = select_stages(stages, ["harden"], store, world=1)
    assert [s.kind for s in chosen] == ["base", "align", "harden", "harden"]  # none needs no training
    with pytest.raises(ConfigError) as err:
        select_stages(stages, ["harden"], store, world=2)
    assert "--stages base" in err.value.fix
    with pytest.raises(ConfigError, match="not a stage kind"):
        select_stages(stages, ["train"], store, world=1)


@pytest.mark.slow
def test_two_processes_train_tar_and_rr_and_only_rank0_writes(isolated_cache):
    first = cli("--stages", "align")  # base and align in one process, as the error message asks
    assert first.returncode == 0, first.stderr[-3000:]
    refused = cli("--stages", "harden,attack", launch=False, env_extra={"WORLD_SIZE": "2", "RANK": "0"})
    assert refused.returncode == 2 and "--stages attack" in refused.stderr
    launched = cli("--stages", "harden", launch=True)
    assert launched.returncode == 0, launched.stderr[-3000:]
    hardened = [p for p in (isolated_cache / "harden").iterdir()]
    assert not [p for p in hardened if p.name.startswith(".")]  # no half-written directory left behind
    logs = {json.loads((p / "stage.json").read_text())["label"]: p for p in hardened if (p / "train_log.json").exists()}
    assert len(logs) == 2
    for label, path in logs.items():
        log = json.loads((path / "train_log.json").read_text())
        assert log["processes"] == 2 and len(log["history"]) == 2, label
        assert list(path.glob("*.safetensors")), label
    again = cli("--stages", "harden")  # one process: everything already stored
    assert again.returncode == 0 and "0 to run" in again.stderr


@pytest.mark.parametrize("name", ["ddp_8gpu.yaml", "fsdp_8gpu.yaml"])
def test_shipped_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import ClusterConfig
    config = ClusterConfig.from_yaml_file(str(ROOT / "configs" / "accelerate" / name))
    raw = yaml.safe_load((ROOT / "configs" / "accelerate" / name).read_text())
    assert str(config.distributed_type).endswith(raw["distributed_type"]) and config.num_processes == raw["num_processes"]
