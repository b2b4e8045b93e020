"""Dataclass configs from a YAML file and `--flags`, with `transformers.HfArgumentParser`.

`config_parser(ConfigClass, prog=..., description=..., epilog=...)` gives the parser: one flag per field
(`--max-steps` and `--max_steps`), an optional positional YAML file, list fields repeatable (`--train-file a
--train-file b`; given flags replace the YAML's list), dict fields as JSON. `parse_config(ConfigClass, parser, argv)`
reads the YAML's values first, then the flags that were given (flags win). YAML values are converted by the field's
type (YAML 1.1 reads `1e-3` as a string, the field says float); an unknown key or a value of the wrong type raises a
`ValueError` that names the file and the key.
"""

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from transformers import HfArgumentParser

Config = TypeVar("Config")


class _Repeatable(argparse.Action):
    """A list flag: its first use replaces the default (the YAML's list), later uses extend it."""

    class Given(list):
        pass

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        current = getattr(namespace, self.dest)
        given = current if isinstance(current, self.Given) else self.Given()
        given.extend(values)
        setattr(namespace, self.dest, given)


def _field_kind(config_class: type, name: str) -> type:
    hint = typing.get_type_hints(config_class)[name]
    return typing.get_origin(hint) or hint


def config_parser(
    config_class: type,
    *,
    prog: str,
    description: str,
    epilog: str,
    field_help: dict[str, str] | None = None,
    choices: dict[str, tuple[str, ...]] | None = None,
) -> HfArgumentParser:
    """The flags of `config_class` plus an optional positional YAML file; `--help` shows `field_help` (with each
    field's default) and ends with `epilog`; `choices` restricts a flag's values."""
    parser = HfArgumentParser(
        config_class,
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", nargs="?", help="YAML run config (its keys are the flags, with underscores)")
    for spec in dataclasses.fields(config_class):  # HfArgumentParser adds `--no-X` only where X defaults to True
        dashed = spec.name.replace("_", "-")
        if _field_kind(config_class, spec.name) is bool and f"--no-{dashed}" not in parser._option_string_actions:
            parser.add_argument(f"--no-{dashed}", action="store_false", dest=spec.name, default=spec.default)
    for action in list(parser._actions):
        action.option_strings.sort(key=lambda option: "_" in option)  # `--max-steps` first in the help
        if action.dest in (field_help or {}) and not action.option_strings[0].startswith("--no-"):
            shown = "" if action.default in (None, "") else f" (default: {action.default})"
            action.help = field_help[action.dest] + shown
        if action.dest in (choices or {}):
            action.choices = choices[action.dest]
        kind = _field_kind(config_class, action.dest) if action.dest in _field_names(config_class) else None
        if kind is dict:  # HfArgumentParser would call dict("...") on the flag's text
            action.type = json.loads
        elif kind is list and action.option_strings:
            repeatable = _Repeatable(option_strings=action.option_strings, dest=action.dest, nargs="+")
            repeatable.type, repeatable.default = action.type, action.default
            repeatable.help = f"{action.help} (repeatable)" if action.help else "repeatable"
            parser._option_string_actions.update(dict.fromkeys(action.option_strings, repeatable))
            parser._actions[parser._actions.index(action)] = repeatable
            action.container._group_actions[action.container._group_actions.index(action)] = repeatable
    return parser


def _field_names(config_class: type) -> set[str]:
    return {spec.name for spec in dataclasses.fields(config_class)}


def read_yaml_mapping(path: str | Path, what: str = "a run config") -> dict[str, Any]:
    """A YAML file of settings; a missing file, a folder, a syntax error (with its line and column) or a top level that
    is not a mapping raise ValueError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a YAML file")
    if not path.is_file():
        raise ValueError(f"{path}: no such file (the YAML config)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"{path}{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: {what} is a mapping of keys to values, not a {type(raw).__name__}")
    return raw


def yaml_values(config_class: type, parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The YAML file's values, each converted by its field's type; unknown keys and bad values name the key."""
    raw = read_yaml_mapping(path)
    unknown = set(raw) - _field_names(config_class)
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # the field's own flag, not its `--no-X` complement
        actions.setdefault(action.dest, action)
    values = {}
    for key, value in raw.items():
        kind, convert = _field_kind(config_class, key), actions[key].type
        if kind is list and not isinstance(value, list):
            value = [value]
        expected = typing.get_type_hints(config_class)[key]
        if isinstance(value, str) and convert not in (None, str) and kind is not list:
            try:
                value = convert(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                raise ValueError(f"{path}: key {key!r}: {value!r} is not a valid {_type_name(expected)}") from None
        if not _fits(value, expected):
            raise ValueError(f"{path}: key {key!r}: {value!r} is not a valid {_type_name(expected)}")
        values[key] = value
    return values


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value has the field's type (ints count as floats; None only where the field allows it)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        origin = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return True
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if origin in (str, bool, list, dict) and isinstance(value, origin):
            return True
        if origin is Any:
            return True
    return False


def parse_config(config_class: type[Config], parser: HfArgumentParser, argv: list[str] | None) -> Config:
    """The YAML file's values (when `argv` names one), then the flags that were given."""
    yaml_file = parser.parse_args(argv).config
    if yaml_file:
        parser.set_defaults(**yaml_values(config_class, parser, yaml_file))
    config, _ = parser.parse_args_into_dataclasses(argv)
    return config
