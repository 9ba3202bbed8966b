"""The README's results section, rendered from the committed leaderboards (no figure typed by hand).

    python scripts/render_results.py          # print it
    python scripts/render_results.py --write  # replace the block between the README's results markers

tests/test_docs.py fails when the README's block is not this script's output for the committed files."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start (scripts/render_results.py) -->", "<!-- results:end -->"
METRIC = "harmful_refusal"
QUESTIONS = {  # recipe -> the question its table answers
    "demo": "Does a short safety SFT survive harmful LoRA and benign full fine-tuning?",
    "demo_rl": "Do GRPO and FRPO hardenings keep refusing after the same attacks (3 seeds each)?",
    "demo_defenses": "Do the field's defenses (RepNoise, Vaccine, Booster, SafeLoRA) keep refusing?",
    "demo_baselines": "Do the trained baselines TAR and RR keep refusing?",
    "demo_attacks": "Which attack family erases refusal (identity shift, poisoned mixes, prefilling, ablation, "
                    "jailbreak-tuning, a backdoor, harmful RL)?",
    "demo_search": "Does a searched attacker (Optuna over the attack's settings) find worse than the grid?",
}


def read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def interval(row: dict, mean: str = "mean", low: str = "ci95_low", high: str = "ci95_high") -> str:
    return f"{float(row[mean]):.2f} [{float(row[low]):.2f}, {float(row[high]):.2f}]"


def table(recipe: str, folder: Path) -> str:
    board = [r for r in read(folder / f"{recipe}.csv") if r["metric"] == METRIC and r["base"] == "aligned"]
    summary = {r["defense"]: r for r in read(folder / f"{recipe}_summary.csv")
               if r["metric"] == METRIC and r["base"] == "aligned"}
    unattacked = {r["defense"]: r for r in board if r["attack"] == "none"}
    judges = sorted({r["judge"] for r in board})
    lines = [f"**{recipe}**: {QUESTIONS[recipe]} Harmful refusal (higher is safer; judge {', '.join(judges)}; "
             f"[{recipe}.csv](leaderboards/{recipe}.csv), [{recipe}_summary.csv](leaderboards/{recipe}_summary.csv))",
             "", "| defense | unattacked [95% CI] (n) | worst after attack [95% CI] | by (attack, lr) |",
             "| --- | --- | --- | --- |"]
    for defense, worst in summary.items():
        plain = unattacked.get(defense)
        shown = f"{interval(plain)} ({plain['n']})" if plain else "-"
        lines.append(f"| {defense} | {shown} | {interval(worst, 'worst_mean', 'worst_ci95_low', 'worst_ci95_high')} "
                     f"| {worst['worst_attack']}, {worst['worst_lr'] or '-'} |")
    return "\n".join(lines)


def render(folder: Path = ROOT / "leaderboards") -> str:
    return "\n\n".join(table(recipe, folder) for recipe in QUESTIONS if (folder / f"{recipe}_summary.csv").is_file())


def readme_block(readme: str) -> str:
    return readme[readme.index(START) + len(START):readme.index(END)].strip("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the block into README.md")
    args = parser.parse_args()
    text = render()
    if not args.write:
        print(text)
        return
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(START) + len(START), readme.index(END)
    (ROOT / "README.md").write_text(readme[:start] + "\n" + text + "\n" + readme[end:], encoding="utf-8")


if __name__ == "__main__":
    main()
