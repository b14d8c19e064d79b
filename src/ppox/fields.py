"""Settings as dataclass fields that carry their help and allowed values.

``option(...)`` (a static ``PPOConfig`` field) and ``hparam(...)`` (a traced ``HParams``
leaf) put a ``FieldSpec`` in the field's metadata. ``check_field`` / ``check_value`` /
``coerce_value`` are the one type check that config files, flags and the Python API share:
each problem is a ``ConfigError`` of one line naming the value, why it is wrong and what to
write instead (as a flag or as a TOML line). See ``ppox.config`` for how to add a setting.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from flax import struct

META_KEY = "ppox"  # where a field's FieldSpec lives in its dataclasses metadata


class ConfigError(ValueError):
    """Bad user input, reported as one line before any compilation."""


@dataclass(frozen=True)
class FieldSpec:
    """What a setting accepts and how it is explained; stored in the field's metadata.

    Attributes:
        help: one line for ``--help`` (and the docs).
        lo, hi: bounds of a number (``-inf``/``inf``: none).
        lo_open, hi_open: the bound itself is excluded (``lo=0, lo_open=True``: ``> 0``).
        positive: an integer count >= 1.
        brax_only: only brax envs read it; any other env refuses a value other than the
            default.
        algos: only these algorithms (``PPOConfig.algo``) read it (empty: every one);
            another algorithm refuses a value other than the default.
        what: what a valid value is, for a Literal's message (e.g. ``"a clip scope"``).
        why: the reason given when a number is out of bounds (default: the bounds).
        example: a good value for messages where the default is None.
    """

    help: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    positive: bool = False
    brax_only: bool = False
    algos: tuple[str, ...] = ()
    what: str | None = None
    why: str | None = None
    example: Any = None

    def bounds_text(self) -> str:
        """``"> 0"``, ``">= 0"``, ``"in [0, 1]"``, ... ("" when unbounded)."""
        if self.positive:
            return ">= 1"
        has_lo, has_hi = self.lo > -math.inf, self.hi < math.inf
        lo, hi = _number_text(self.lo), _number_text(self.hi)
        if has_lo and has_hi:
            return (f"in {'(' if self.lo_open else '['}{lo}, "
                    f"{hi}{')' if self.hi_open else ']'}")
        if has_lo:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if has_hi:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return ""

    def out_of_bounds(self, arr: np.ndarray) -> np.ndarray:
        """Where ``arr`` (float64) breaks the bounds or is not finite."""
        bad_lo = (arr <= self.lo) if self.lo_open else (arr < self.lo)
        bad_hi = (arr >= self.hi) if self.hi_open else (arr > self.hi)
        return bad_lo | bad_hi | ~np.isfinite(arr)


def _number_text(x: float) -> str:
    """A bound as written: whole numbers in full (4294967295), others short (2.5e-04 -> 0.00025)."""
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else f"{x:g}"


def option(default: Any, *, help: str, positive: bool = False, brax_only: bool = False,
           algos: tuple[str, ...] = (), lo: float = -math.inf, hi: float = math.inf,
           lo_open: bool = False, hi_open: bool = False, what: str | None = None,
           why: str | None = None, example: Any = None) -> Any:
    """A ``PPOConfig`` field: its default, help text and allowed values (see ``FieldSpec``)."""
    spec = FieldSpec(help=help, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open,
                     positive=positive, brax_only=brax_only, algos=tuple(algos), what=what,
                     why=why, example=example)
    return dataclasses.field(default=default, metadata={META_KEY: spec})


def hparam(default: float, *, help: str, lo: float = -math.inf, hi: float = math.inf,
           lo_open: bool = False, hi_open: bool = False, why: str | None = None,
           algos: tuple[str, ...] = ()) -> Any:
    """An ``HParams`` field (a pytree leaf, traced): its default, help text and bounds."""
    spec = FieldSpec(help=help, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, why=why,
                     algos=tuple(algos))
    return struct.field(pytree_node=True, default=default, metadata={META_KEY: spec})


@functools.cache
def field_specs(cls: type) -> dict[str, FieldSpec]:
    """name -> ``FieldSpec`` of every field of ``PPOConfig`` or ``HParams``, in order."""
    return {f.name: f.metadata[META_KEY] for f in dataclasses.fields(cls)}


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """name -> the field's type annotation (resolved)."""
    return typing.get_type_hints(cls)


def field_default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


# --------------------------------------------------------------------------------------
# Values: one type check for config files, flags and the Python API


Style = Literal["flag", "toml"]


def literal_choices(hint: Any) -> tuple[Any, ...] | None:
    """The choices of a ``Literal`` (or ``Literal | None``) type, else None."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    return None


def optional_inner(hint: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and type(None) in typing.get_args(hint):
            return args[0]
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_)


def _is_widths(v: Any) -> bool:
    return (isinstance(v, list | tuple) and len(v) > 0
            and all(_is_int(w) and w > 0 for w in v))


def value_problem(hint: Any, spec: FieldSpec, value: Any) -> str | None:
    """Why ``value`` is not a valid value of a field of type ``hint`` (None: it is).

    ``HParams`` leaves (``Any``) are only checked to be numbers here; their bounds, with the
    field's ``why``, are ``HParams.validate``'s (it also takes sweep arrays).
    """
    inner = optional_inner(hint)
    if inner is not None:
        return None if value is None else value_problem(inner, spec, value)
    choices = literal_choices(hint)
    if choices is not None:
        if isinstance(value, str) and value in choices:
            return None
        listed = ", ".join(map(repr, choices))
        return f"is not {spec.what}; choose one of {listed}" if spec.what else (
            f"is not one of {listed}")
    if spec.positive:
        return None if _is_int(value) and value >= 1 else "must be a positive integer"
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is Any:
        return None if _is_number(value) else "is not a number"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    if typing.get_origin(hint) is tuple:  # layer widths
        return None if _is_widths(value) else "must be a non-empty list of positive layer widths"
    if hint is int and not _is_int(value):
        return "must be an integer"
    if hint is float and not _is_number(value):
        return "is not a number"
    if hint in (int, float) and spec.out_of_bounds(np.asarray(value, np.float64)):
        return spec.why or f"must be {spec.bounds_text()}"
    return None


def _text(value: Any, style: Style) -> str:
    """``value`` as one would write it on the command line or in a TOML file."""
    if isinstance(value, bool):
        return ("true" if value else "false") if style == "toml" else str(value)
    if isinstance(value, tuple | list):
        inner = [_text(v, style) for v in value]
        return f"[{', '.join(inner)}]" if style == "toml" else " ".join(inner)
    if isinstance(value, str):
        return f'"{value}"' if style == "toml" else value
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def what_to_write(name: str, hint: Any, spec: FieldSpec, default: Any, style: Style) -> str:
    """What to write instead: the form of a good value, as a flag or as a TOML line."""
    flag = f"--{flag_name(name)}"
    if spec.positive:
        return (f"pass {flag} N with N >= 1" if style == "flag"
                else f"write {name} = N with N >= 1")
    if hint is bool and style == "flag":
        return f"pass {flag} or --no-{flag_name(name)}"
    if hint is bool:
        return f"write {name} = true or {name} = false (no quotes)"
    example = default if default is not None else spec.example
    if example is None:
        return f"see --help for {flag}"
    return (f"e.g. {flag} {_text(example, style)}" if style == "flag"
            else f"e.g. {name} = {_text(example, style)}")


def check_field(name: str, hint: Any, spec: FieldSpec, default: Any, value: Any,
                style: Style = "flag") -> None:
    """Raises ``ConfigError`` with one line (the value, why, what to write) unless ``value``
    suits a field ``name: hint = default`` described by ``spec``."""
    problem = value_problem(hint, spec, value)
    if problem is not None:
        raise ConfigError(f"{name}={value!r} {problem}; "
                          f"{what_to_write(name, hint, spec, default, style)}")


def check_value(cls: type, name: str, value: Any, style: Style = "flag") -> None:
    """``check_field`` for field ``name`` of ``cls`` (``PPOConfig``, ``HParams`` or any
    dataclass whose fields are ``option``s). ``style`` decides how the line says what to do:
    as a flag (``--num-envs N``) or as a config-file line (``num_envs = N``)."""
    check_field(name, field_types(cls)[name], field_specs(cls)[name], field_default(cls, name),
                value, style)


def coerce_value(cls: type, name: str, value: Any, style: Style = "toml") -> Any:
    """``value`` (e.g. read from TOML) checked and converted to the field's Python type:
    lists of widths become tuples (a bare number is one layer), numbers given for a float
    become floats."""
    hint = field_types(cls)[name]
    if typing.get_origin(hint) is tuple and _is_int(value):
        value = [value]
    check_value(cls, name, value, style)
    if isinstance(value, list):
        return tuple(value)
    if value is not None and (hint is Any or hint is float or optional_inner(hint) is float):
        return float(value)
    return value


def flag_name(name: str) -> str:
    """``num_envs`` -> ``num-envs`` (its flag is ``--num-envs``)."""
    return name.replace("_", "-")
