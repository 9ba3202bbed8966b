"""The house: layers from the modules' own imports (module level and inside functions alike).

Bottom to top: foundations (errors, typed, files, registry); models and data; the recipe's
values, training helpers and machine probes; evaluators; attacks and defenses; results;
execution (engine); the command line. An import may go down or stay on its floor, never up;
no two files import each other, even through others; and no registered component imports
another registered component (shared code lives below them or in a non-registered module).
"""
import ast
from pathlib import Path

from frpo_bench import registry

PACKAGE = Path(__file__).resolve().parents[1] / "frpo_bench"
LAYERS = [
    ("errors", "typed", "files", "registry", "work", "__init__"),
    ("models", "data"),
    ("config", "generation_config", "recipe_rewrites", "search_options", "training", "perf"),
    ("evaluators",),
    ("attacks", "defenses"),
    ("results",),
    ("engine",),
    ("cli", "cli_judges", "__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} sits on no floor: add its top-level name to LAYERS")


def imports() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("frpo_bench"):
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("frpo_bench")]
            for target in targets:  # `from pkg import module` names a module; `from module import x` does not
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    found.add(target)
                    break
        graph[name] = found
    return graph


def test_no_import_runs_upward():
    upward = [f"{src} (floor {layer(src)}) -> {dst} (floor {layer(dst)})"
              for src, targets in imports().items() for dst in targets
              if layer(dst) > layer(src) and dst != "frpo_bench"]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    graph = {src: {d for d in targets if d != "frpo_bench"} for src, targets in imports().items()}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, circles


def test_components_do_not_import_each_other():
    components = {path.split(":")[0] for table in (registry.DEFENSES, registry.ATTACKS, registry.EVALUATORS)
                  for path in table.values()}
    ties = [f"{src} -> {dst}" for src, targets in imports().items() if src in components
            for dst in targets if dst in components]
    assert not ties, ties


def test_the_engine_reads_components_through_their_contracts_only():
    """No probing: plan, stages, runner and pipeline call the contract, never hasattr/getattr."""
    probing = [f"{path.name}:{i}" for path in (PACKAGE / "engine").glob("*.py")
               for i, line in enumerate(path.read_text().splitlines(), 1) if "hasattr(" in line or "getattr(" in line]
    assert not probing, probing


# Where a registered name is also one of the engine's own words: "none" labels the cell no attack made (and is
# the default defense type), "checkpoint" is the stage kind of a trajectory point.
ENGINE_WORDS = {"none", "checkpoint"}


def test_the_engine_names_no_defense_attack_or_evaluator():
    """The engine prices, schedules and plans components through their contracts (work, flags, options), so a
    new defense, attack or evaluator never edits it: no registered name appears in engine/ as a string."""
    names = (set(registry.DEFENSES) | set(registry.ATTACKS) | set(registry.EVALUATORS)) - ENGINE_WORDS
    found = []
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert not found, found


def test_every_component_inherits_its_contracts_defaults():
    from frpo_bench.attacks.base import AttackBase
    from frpo_bench.defenses.base import DefenseBase
    from frpo_bench.evaluators.base import EvaluatorBase
    for kind, base in (("defense", DefenseBase), ("attack", AttackBase), ("evaluator", EvaluatorBase)):
        for name in registry._KINDS[kind]:
            assert issubclass(registry.load(kind, name), base), (kind, name)
