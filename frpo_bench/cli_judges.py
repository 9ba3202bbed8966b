"""`frpo-bench judges validate`: check refusal judges against human labels (XSTest v2)."""
from __future__ import annotations

import argparse
from pathlib import Path

from frpo_bench.errors import ConfigError

DEFAULT_JUDGES = ["refusal", "compliance_proxy", "refusal_markers_v1", "xstest_string_match"]


def add_parser(sub) -> None:
    judges = sub.add_parser("judges", help="check judges against human labels",
                            description="Judges of refusal, checked against people.")
    verbs = judges.add_subparsers(dest="verb", required=True)
    check = verbs.add_parser(
        "validate", help="score judges' refusal verdicts against human-labelled completions",
        description="Agreement, Cohen's kappa, and precision and recall of 'refusal' (full or partial, as people "
                    "labelled it), each with a 95%% bootstrap interval, per source model and pooled: a CSV, a "
                    "markdown table and a plot in --out. Judges: any registered evaluator that gives a refusal or "
                    "compliance verdict (refusal, compliance_proxy, llm_refusal) and the baselines "
                    "refusal_markers_v1 (this project's v1) and xstest_string_match (the XSTest paper's).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--judge", action="append", default=None, metavar="NAME",
                       help=f"a judge to check; repeatable (default: {', '.join(DEFAULT_JUDGES)})")
    check.add_argument("--completions", action="append", default=None, metavar="MODEL|CSV",
                       help="XSTest model whose labelled completions to use (gpt4, llama2orig, mistralinstruct, "
                            "llama2new, mistralguard), or a CSV with prompt, completion, final_label; repeatable "
                            "(default: gpt4, llama2orig, mistralinstruct)")
    check.add_argument("--set", dest="options", action="append", default=[], metavar="JUDGE.KEY=VALUE",
                       help="a judge option, e.g. --set llm_refusal.base_url=http://127.0.0.1:8000/v1 "
                            "--set llm_refusal.judge_model=judge; repeatable")
    check.add_argument("--seed", type=int, default=0, help="bootstrap seed (the same seed gives the same intervals)")
    check.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates per interval")
    check.add_argument("--out", type=Path, default=Path("runs/judge-validation"), help="where the CSV, table and plot go")
    check.add_argument("--record", action="store_true",
                       help="record each judge's pooled agreement in the package (results/assets/human_agreement.csv), "
                            "which leaderboards show beside the judge's numbers")


def parse_options(items: list[str], judges: list[str]) -> dict[str, dict]:
    import yaml
    options: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        judge, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError("--set", item, "must look like JUDGE.KEY=VALUE", "e.g. --set llm_refusal.judge_model=judge")
        if judge not in judges:
            raise ConfigError("--set", item, f"names judge {judge!r}, which is not validated here",
                              f"add --judge {judge}, or set an option of one of {', '.join(judges)}")
        options.setdefault(judge, {})[name] = yaml.safe_load(value)
    return options


def cmd_judges(args) -> int:
    from frpo_bench.data.human_labels import DEVELOPMENT_SOURCES, LABEL_SET, load_labelled
    from frpo_bench.files import write_text_atomic
    from frpo_bench.results import judge_validation as jv
    judges = args.judge or DEFAULT_JUDGES
    known = jv.judge_names()
    for judge in judges:
        if judge not in known:
            raise ConfigError("--judge", judge, "gives no refusal or compliance verdict here", f"use one of {', '.join(known)}")
    if args.bootstrap < 100:
        raise ConfigError("--bootstrap", str(args.bootstrap), "is too few replicates for a 95% interval", "use 1000 or more")
    options = parse_options(args.options, judges)
    items = [item for source in (args.completions or list(DEVELOPMENT_SOURCES)) for item in load_labelled(source)]
    rows = jv.validate(judges, items, options, seed=args.seed, samples=args.bootstrap)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "judge_validation.csv", jv.to_csv(rows))
    table = jv.to_markdown(rows, LABEL_SET)
    write_text_atomic(args.out / "judge_validation.md", table)
    plot = jv.plot(rows, args.out / "judge_validation.png")
    print(table)
    print(f"csv: {args.out / 'judge_validation.csv'}\nplot: {plot}")
    if args.record:
        path = record(jv.record_rows(rows, LABEL_SET))
        print(f"recorded: {path}")
    return 0


def record(new_rows: list[dict]) -> Path:
    """Replace (or add) these judges' rows in the package's human_agreement.csv."""
    from importlib import resources

    from frpo_bench.files import write_text_atomic
    from frpo_bench.results import judge_validation as jv
    from frpo_bench.results.human_agreement import RECORD_FILE, recorded
    kept = recorded()
    kept.update({row["judge_name"]: row for row in new_rows})
    path = Path(str(resources.files("frpo_bench.results").joinpath("assets", RECORD_FILE)))
    write_text_atomic(path, jv.to_csv(list(kept.values()), jv.RECORD_COLUMNS))
    return path
