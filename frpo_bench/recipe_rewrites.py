"""Rewrites of a raw recipe before it is typed: older attack layouts lifted into `options`, and an attack's
`grid` expanded into one attack per combination of its values. Both leave a recipe that the typed
`config.Recipe` validates as if it had been written out by hand (same attacks, so the same stage keys)."""
from __future__ import annotations

import itertools
import math
from copy import deepcopy
from dataclasses import fields

from frpo_bench.errors import ConfigError

ATTACK_FIELDS = ("name", "type", "lrs", "options")
GRID_VALUE_TYPES = (bool, int, float, str)


def lift_attack_options(raw: dict) -> None:
    """Recipes written before attacks had `options` put the fine-tuning fields (data, lora, steps, ...)
    beside name and lrs: move the fields the attack type's options know into `options`, so those
    recipes keep loading (anything else stays, and validation names it)."""
    from frpo_bench import registry
    for i, attack in attack_entries(raw):
        kind = attack.get("type", "finetune")
        if not isinstance(kind, str) or kind not in registry.ATTACKS:
            continue  # validation names the bad attack or type
        known = {f.name for f in fields(registry.options_class("attack", kind))}
        flat = {k: v for k, v in attack.items() if k not in ATTACK_FIELDS and k in known}
        if not flat:
            continue
        options = attack.setdefault("options", {})
        if not isinstance(options, dict):
            continue  # validation names the bad `options` value
        both = sorted(set(flat) & set(options))
        if both:
            raise ConfigError(f"attacks[{i}].{both[0]}", flat[both[0]], "is given both beside the attack and in its "
                              "options", f"keep it in attacks[{i}].options only")
        options.update(flat)
        for key in flat:
            del attack[key]


def attack_entries(raw: dict) -> list[tuple[int, dict]]:
    attacks = raw.get("attacks") if isinstance(raw, dict) else None
    return [(i, a) for i, a in enumerate(attacks if isinstance(attacks, list) else []) if isinstance(a, dict)]


def expand_attack_grids(raw: dict) -> dict[int, str]:
    """Replace each attack with a `grid` ({option: [values]}, dotted for a nested option such as poison.share)
    by one attack per combination, in place, named `<name>_<value>` (one option) or `<name>_<option><value>_...`
    (several). Returns, per expanded attack's index, where it came from (for error messages)."""
    if not attack_entries(raw):
        return {}
    expanded, origins = [], {}
    for i, attack in enumerate(raw["attacks"]):
        grid = attack.pop("grid", None) if isinstance(attack, dict) else None
        if grid is None:
            expanded.append(attack)
            continue
        axes = checked_grid(grid, f"attacks[{i}].grid")
        for values in itertools.product(*axes.values()):
            one = deepcopy(attack)
            for dotted, value in zip(axes, values):
                set_option(one, dotted, value, f"attacks[{i}].grid.{dotted}")
            one["name"] = grid_name(str(attack.get("name", "attack")), dict(zip(axes, values)))
            origins[len(expanded)] = f"attacks[{i}] (grid: {', '.join(f'{k}={v}' for k, v in zip(axes, values))})"
            expanded.append(one)
    raw["attacks"] = expanded
    return origins


MAX_GRID = 1_000  # attacks one grid may expand into


def checked_grid(grid, path: str) -> dict[str, list]:
    example = "e.g. grid: {tokens: [5, 10, 20]} or grid: {poison.share: [0.1, 0.3]}"
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(path, grid, "must map option names to lists of values", example)
    for option, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}.{option}", values, "must be a non-empty list of values", example)
        bad = [v for v in values if not isinstance(v, GRID_VALUE_TYPES)]
        if bad:
            raise ConfigError(f"{path}.{option}", bad[0], "is not a number, string or boolean (values name the "
                              "attacks they make)", "write one attack per structured value instead")
        if len(set(map(str, values))) != len(values):
            raise ConfigError(f"{path}.{option}", values, "repeats a value", "list each value once")
    combinations = math.prod(len(values) for values in grid.values())
    if combinations > MAX_GRID:
        raise ConfigError(path, {k: f"{len(v)} values" for k, v in grid.items()}, f"makes {combinations:,} attacks, "
                          f"over the limit of {MAX_GRID:,}", "grid fewer values, or search the space (search:)")
    return grid


def set_option(attack: dict, dotted: str, value, path: str) -> None:
    """attack.options.<dotted> = value, creating nested mappings; `lrs` is not an option (it is a grid already)."""
    options = attack.setdefault("options", {})
    parts = dotted.split(".")
    node = options
    for part in parts[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ConfigError(path, value, f"reaches into '{part}', which is not a mapping of options",
                              "name an option of the attack (dotted for a nested one, e.g. poison.share)")
    if not isinstance(node, dict) or not parts[-1]:
        raise ConfigError(path, value, "is not an option path", "e.g. tokens, or poison.share")
    node[parts[-1]] = value


def grid_name(name: str, picked: dict) -> str:
    def shown(value) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)
    if len(picked) == 1:
        return f"{name}_{shown(next(iter(picked.values())))}"
    return name + "".join(f"_{dotted.split('.')[-1]}{shown(v)}" for dotted, v in picked.items())


def grid_origin(err: ConfigError, origins: dict[int, str]) -> ConfigError:
    """A validation error of an expanded attack, named by the recipe entry and grid values it came from."""
    for index, origin in origins.items():
        prefix = f"attacks[{index}]"
        if err.field == prefix or err.field.startswith(prefix + "."):
            return ConfigError(origin + err.field[len(prefix):], err.value, err.problem, err.fix)
    return err
