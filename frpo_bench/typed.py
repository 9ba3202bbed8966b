"""Turn plain dicts (YAML, --set) into typed dataclasses, with errors that name the field.

Every config dataclass declares its fields with `help=` metadata; this module only
checks types and unknown keys, and the dataclasses' own `validate()` checks ranges.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Optional

import yaml

from frpo_bench.errors import ConfigError


def opt(default: Any = dataclasses.MISSING, help: str = "", omit_if_default: bool = False, in_key: bool = True,
        **kw: Any) -> Any:
    """A dataclass field with help text; mutable defaults are copied per instance. `omit_if_default`
    leaves the field out of to_dict while it holds its default: a field added later then does not
    change the cache keys of configs that do not use it. `in_key=False`: a field that names where
    something is, not what it is (a file's path, whose content enters the key another way)."""
    metadata = {"help": help, "omit_if_default": omit_if_default, "in_key": in_key}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, path)
            except ConfigError as err:
                errors.append(err)
        raise errors[-1]
    if value is None:
        raise ConfigError(path, value, "is required here", f"give a value of type {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            value = [value]  # a scalar where a list is expected means a list of one
        return [_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, value, "must be a mapping", "write it as key: value pairs")
        return {str(k): _convert(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, value, "must be true or false", "write true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(path, value, "must be an integer", "write a whole number, e.g. 8")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(path, value, "must be a number", "write a number, e.g. 1e-4")
        if not math.isfinite(number):  # no setting means anything at infinity, and NaN compares false to every bound
            raise ConfigError(path, value, "must be a finite number", "write a finite number, e.g. 1e-4")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(path, value, "must be a string", "write a single text value")
    raise TypeError(f"unsupported config type {tp} at {path}")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys with a suggestion."""
    where = path or cls.__name__
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(where, data, "must be a mapping", f"write the fields of {cls.__name__} as key: value pairs")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(fields)}"
            raise ConfigError(f"{path}.{key}" if path else str(key), data[key], "is not a known key", hint)
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], sub)
        elif f.default_factory is not dataclasses.MISSING:  # a default written as plain data is typed like data
            kwargs[name] = _convert(f.default_factory(), hints[name], sub)
        elif f.default is dataclasses.MISSING:
            raise ConfigError(sub, None, "is required", f"add '{name}:' ({f.metadata.get('help', '')})")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(path)
    return obj


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def to_dict(obj: Any, for_key: bool = False) -> Any:
    """Plain-JSON form of a config (for manifests; `for_key`: for cache keys, without `in_key=False` fields)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name), for_key) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_if_default") and getattr(obj, f.name) == _default(f))
                and not (for_key and f.metadata.get("in_key") is False)}
    if isinstance(obj, list):
        return [to_dict(v, for_key) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, for_key) for k, v in obj.items()}
    return obj


def key_fields_except(obj: Any, transport: tuple[str, ...]) -> dict:
    """to_dict of a config without its transport-only fields (what may enter a cache key)."""
    return {k: v for k, v in to_dict(obj, for_key=True).items() if k not in transport}


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `--set a.b.0.c=value` to a raw recipe dict (value parsed as YAML); `a.+=value` appends."""
    if "=" not in assignment:
        raise ConfigError("--set", assignment, "must look like key.path=value", "e.g. --set generation.max_new_tokens=32")
    dotted, raw = assignment.split("=", 1)
    if not dotted.strip() or any(c in dotted for c in " {}[]:"):
        raise ConfigError("--set", assignment, "must look like key.path=value", "e.g. --set generation.max_new_tokens=32")
    check_text_size(assignment, "--set")
    if dotted.count(".") >= MAX_RECIPE_DEPTH:
        raise ConfigError("--set", dotted, f"names a path deeper than {MAX_RECIPE_DEPTH} levels",
                          "name a recipe field, e.g. attacks.0.options.steps")
    try:
        value = load_yaml(raw) if raw.strip() else None
        check_recipe_size(value, f"--set {dotted}")
    except yaml.YAMLError as err:
        raise ConfigError("--set", assignment, f"has a value that is not valid YAML ({yaml_problem(err)})",
                          "quote it, or close its brackets: e.g. --set 'seeds=[0, 1]'") from None
    parts = dotted.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        here = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if part == "+" and last:  # `--set evaluations.+={...}` appends an item
                node.append(value)
                return
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {here}", part, f"is not an index of a list of {len(node)}",
                                  "use 0-based indices, or + to append")
            if last:
                node[int(part)] = value
            node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value  # unknown keys are caught by validation with a suggestion
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {here}", node, "cannot hold sub-keys", "set the parent key instead")


MAX_RECIPE_BYTES = 1 << 20  # a recipe's text, and one --set value
MAX_RECIPE_DEPTH = 32  # nested mappings and lists (the packaged recipes use 6)
MAX_RECIPE_NODES = 200_000  # values in a recipe with every alias expanded (paper: ~2,000)


def check_recipe_size(data, where: str) -> None:
    """A recipe (or --set value) must be bounded in depth and in values once its YAML aliases are expanded:
    counted by a walk that stops at the limit, so an alias bomb is refused before anything expands it."""
    count, todo = 0, [(data, 1)]
    while todo:
        node, depth = todo.pop()
        count += 1
        if count > MAX_RECIPE_NODES:
            raise ConfigError(where, "an expanded recipe", f"holds over {MAX_RECIPE_NODES:,} values once its YAML "
                              "aliases are expanded", "write the recipe without an alias bomb; repeat an entry with "
                              "a grid or a merge key instead")
        if depth > MAX_RECIPE_DEPTH:
            raise ConfigError(where, "a nested value", f"nests deeper than {MAX_RECIPE_DEPTH} levels",
                              "flatten it: recipe fields nest a few levels at most")
        if isinstance(node, dict):
            todo.extend((child, depth + 1) for pair in node.items() for child in pair)
        elif isinstance(node, (list, tuple)):
            todo.extend((child, depth + 1) for child in node)


def check_text_size(text: str, where: str) -> None:
    if len(text) > MAX_RECIPE_BYTES:
        raise ConfigError(where, f"{len(text):,} characters", f"is longer than {MAX_RECIPE_BYTES:,} characters",
                          "a recipe is a few kilobytes: give its fields, not data")


def load_yaml(text: str):
    """yaml.safe_load, except that a key given twice in one mapping is an error (plain YAML keeps the last
    silently, so a pasted line could replace a recipe's field unnoticed). Keys a merge (`<<: *anchor`) brings in
    may be overridden: that is what merging is for."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeLoader names an unhashable key itself
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (first at line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=StrictLoader)
    except RecursionError:
        raise yaml.YAMLError(f"it nests deeper than the YAML reader can follow (over {MAX_RECIPE_DEPTH} levels "
                             "is refused anyway)") from None


def yaml_problem(err: "yaml.YAMLError") -> str:
    """A YAML error in one line: what is wrong and where (line and column, 1-based)."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(err, 'problem', None) or str(err) or err.__class__.__name__}{where}".replace("\n", " ")


def describe(cls: type, indent: str = "  ") -> str:
    """Help text for every field of a config dataclass (for `--help` and docs)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        lines.append(f"{indent}{f.name} ({_type_name(hints[f.name])}, default {default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)


def check_positive(obj: Any, path: str, *names: str) -> None:
    """Each named field of `obj` must be a positive, finite number (NaN and infinity are refused too)."""
    for name in names:
        check_positive_value(getattr(obj, name), f"{path}.{name}" if path else name)


def check_positive_value(value: Any, field: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(field, value, "must be positive and finite", f"set {field.rsplit('.', 1)[-1]} to a number above 0")


@dataclasses.dataclass
class Options:
    """Base of every component's options (a dataclass of `opt` fields). The engine reads a component's
    options only through these four methods; override the ones that differ from the defaults."""

    def validate(self, path: str) -> None:
        """Check values (ranges, choices) at parse time; no file, network or installed package is read."""

    def key_fields(self) -> dict:
        """What changes the component's output, for the cache key: every field unless overridden to drop
        transport-only ones (batch sizes, endpoints, concurrency)."""
        return to_dict(self, for_key=True)

    def data_refs(self) -> list:
        """The DataRefs the component reads (resolved before compute; their content ids enter the key)."""
        return []

    def preflight(self, path: str) -> None:
        """Before compute, after parsing: check what lives outside the recipe (files, models, packages)."""

    def notes(self) -> list[str]:
        """Where these settings deliberately differ from the component's reference (the paper's code): named
        beside every leaderboard row of the component. None by default."""
        return []

    def planned_steps(self) -> Optional[int]:
        """The optimizer steps a training component will take (where it can stop for a trajectory point);
        None for components that do not train in steps."""
        return None

    def resolve_installed(self, path: str, device: str) -> dict[str, str]:
        """Before planning: settle what the options leave to the machine (e.g. `dtype: auto`) and say how,
        {field: what it became and why}; nothing by default."""
        return {}

    def uses_generation_engine(self) -> bool:
        """Whether the component runs on the run's resident vLLM engine (which then stays up for it)."""
        return False


@dataclasses.dataclass
class NoOptions(Options):
    """This component takes no options."""
