"""The flags of ``ppox eval``, ``plot``, ``bench`` and ``envs`` (each command's own dataclass):
tyro parses them, but a bad number, a value outside its choices or an unknown flag is one
``ConfigError`` line first, as for the train-style flags (``ppox.cli.args``)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tyro

from ppox.cli.args import _float_or_text, _int_or_text, unknown_option
from ppox.config import ConfigError, literal_choices, optional_inner

_T = typing.TypeVar("_T")
_KIND = {int: "a whole number", float: "a number"}


def parse_command(cls: type[_T], argv: Sequence[str], prog: str) -> _T:
    """``tyro.cli`` for a command's own flags (``ppox eval``, ``plot``, ``bench``, ``envs``),
    with every bad value or unknown flag one ``ConfigError`` line (which flag, the text, what
    to pass) where tyro's parser would print its box. ``1e3`` passes as 1000."""
    checked, values = _checked_values(cls, argv)
    words = [w for k, w in enumerate(checked) if k not in values and not w.startswith("-")]
    required = [f for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    if required and not words and not {"-h", "--help"} & set(argv):
        what = required[0].name.upper()
        raise ConfigError(f"{prog} needs {what}; `{prog} --help` lists the arguments")
    args, unknown = tyro.cli(cls, args=checked, prog=prog, return_unknown_args=True)
    if unknown:
        word = unknown[0]
        if not word.startswith("-"):
            raise ConfigError(f"unexpected argument {word!r}; `{prog} --help` lists the "
                              "arguments")
        known = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(cls)]
        raise ConfigError(unknown_option(word, word.split("=", 1)[0].replace("_", "-"),
                                         known, prog))
    return args


def _checked_values(cls: type, argv: Sequence[str]) -> tuple[list[str], set[int]]:
    """``argv`` with each number flag's text checked and written as the number it stands
    for, and the positions of the flags' values; a value that is not of its flag's type
    (or not one of its choices) raises."""
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):  # tyro takes --run-index and --run_index
        fields[f"--{f.name}"] = fields[f"--{f.name.replace('_', '-')}"] = (f, hints[f.name])
    out, values = list(argv), set()
    for i, word in enumerate(out):
        flag, eq, text = word.partition("=")
        if flag not in fields:
            continue
        field, hint = fields[flag]
        kind = optional_inner(hint) or hint
        many = typing.get_origin(kind) is tuple
        kind = typing.get_args(kind)[0] if many else kind
        if eq:
            places = [i]
        else:
            places = list(range(i + 1, len(out)))
            stop = next((k for k in places if out[k].startswith("--")), len(out))
            places = [k for k in places if k < stop][: None if many else 1]
            if not places and not many and kind is not bool:
                raise ConfigError(f"{flag} needs a value (e.g. {flag} "
                                  f"{_example(field, kind)})")
            values.update(places if kind is not bool else ())
        if kind not in _KIND and literal_choices(kind) is None:
            continue
        for k in places:
            given = text if eq else out[k]
            if optional_inner(hint) is not None and given == "None":
                continue
            value = _value_of(flag, field, kind, given)
            out[k] = f"{flag}={value}" if eq else str(value)
    return out, values


def _value_of(flag: str, field: dataclasses.Field, kind: Any, text: str) -> Any:
    choices = literal_choices(kind)
    if choices is not None:
        if text not in choices:
            raise ConfigError(f"{flag} {text!r}: not one of {{{','.join(choices)}}}")
        return text
    value = _int_or_text(text) if kind is int else _float_or_text(text)
    if isinstance(value, str):
        raise ConfigError(f"{flag} {text!r}: not {_KIND[kind]}; pass e.g. {flag} "
                          f"{_example(field, kind)}")
    return value


def _example(field: dataclasses.Field, kind: Any) -> str:
    """A value to show for ``field`` (of type ``kind``): its default, else a placeholder."""
    default = field.default
    if isinstance(default, tuple):
        return " ".join(map(str, default))
    if default is None or default is dataclasses.MISSING:
        return "1" if kind in _KIND else "PATH" if kind is Path else "VALUE"
    return str(default)
