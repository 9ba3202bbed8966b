"""The gate's error rates, measured: `frpo-bench check --checkpoint` run with several seeds against one baseline.

    python benchmarks/gate_reruns.py --checkpoint MODEL --baseline leaderboards/gate.csv --seeds 0 1 2
        [--label power-aligned-vs-hardened] [--store DIR] [--out benchmarks/results/gate_reruns_<label>.json]

With the baseline's own model and other seeds, every exit 1 is a false alarm (the gate's level says how
often that may happen per metric); with a worse model, every exit 1 is a regression caught (the power).
Each check runs the `gate` recipe on the checkpoint as a user would, through the CLI, and the table it
prints is kept with its exit code, seconds, and this machine's CPU, flags and library versions.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def check(checkpoint: str, baseline: str, seed: int, store: str | None, alpha: float) -> dict:
    command = [sys.executable, "-m", "frpo_bench", "check", "--checkpoint", checkpoint, "--baseline", baseline,
               "--set", f"seeds=[{seed}]", "--alpha", str(alpha), "--out", f"/tmp/frpo-bench-gate-rerun-{seed}"]
    if store:
        command += ["--store", store]
    start = time.time()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = done.stdout.splitlines()
    table = [line for line in lines if line.strip().endswith(("ok", "improved", "REGRESSED"))]
    verdict = next((line for line in reversed(lines) if line.strip()), "")
    return {"seed": seed, "exit_code": done.returncode, "seconds": round(time.time() - start),
            "regressed": sum(line.strip().endswith("REGRESSED") for line in table), "rows": len(table),
            "table": table, "summary": verdict, "stderr_tail": done.stderr.splitlines()[-3:] if done.returncode > 1 else []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--label", default="reruns")
    parser.add_argument("--store", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from frpo_bench.perf import machine_info
    runs = [check(args.checkpoint, args.baseline, s, args.store, args.alpha) for s in args.seeds]
    for run in runs:
        print(f"seed {run['seed']}: exit {run['exit_code']}, {run['regressed']} of {run['rows']} metrics regressed "
              f"({run['seconds']} s)")
    result = {"machine": machine_info(), "what": f"frpo-bench check --checkpoint {args.checkpoint} --baseline "
              f"{args.baseline} --set seeds=[s] --alpha {args.alpha}, s in {args.seeds}",
              "flagged": sum(r["exit_code"] == 1 for r in runs), "runs": runs}
    out = args.out or ROOT / "benchmarks" / "results" / f"gate_reruns_{args.label}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['flagged']} of {len(runs)} checks exited 1; written {out}")


if __name__ == "__main__":
    main()
