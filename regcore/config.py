"""Typed, UI-describable configs.

Every method/training config is a frozen dataclass whose fields are declared with
:func:`param`, carrying help text and a range or choices. The app builds widgets from
:func:`describe`, the CLI parses ``--set key=value`` with :func:`from_overrides`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import numpy as np


def param(
    default: Any,
    help: str,
    *,
    range: tuple[float, float] | None = None,
    choices: tuple | type[enum.Enum] | None = None,
    step: float | None = None,
    advanced: bool = False,
):
    """Declare a config field with the metadata the UI/CLI need.

    Args:
        default: default value (immutable).
        help: one sentence for tooltips and ``regcore methods --json``; state units.
        range: inclusive ``(low, high)`` for numbers.
        choices: allowed values, or a StrEnum class.
        step: slider step for the UI.
        advanced: hide behind an "advanced" expander in the UI.
    """
    meta = {"help": help, "range": range, "choices": choices, "step": step, "advanced": advanced}
    if isinstance(default, (list, dict, set)):
        raise TypeError("param default must be immutable (use a tuple)")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    help: str
    range: tuple[float, float] | None
    choices: tuple | None
    step: float | None
    advanced: bool

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["default"] = _jsonable(self.default)
        d["choices"] = [_jsonable(c) for c in self.choices] if self.choices else None
        return d


def _jsonable(v):
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def _type_name(tp) -> str:
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return "choice"
        return tp.__name__
    origin = typing.get_origin(tp)
    if origin is tuple or _union_with_tuple(tp):
        return "tuple"  # a list of numbers in the UI; a union such as ``int | tuple[int, ...]`` takes one too
    return str(tp)


def _union_with_tuple(tp) -> bool:
    """True for a union type with a tuple member (``int | tuple[int, ...]``)."""
    if typing.get_origin(tp) not in (typing.Union, getattr(types, "UnionType", ())):
        return False
    return any(typing.get_origin(o) is tuple for o in typing.get_args(tp))


def describe(config_cls) -> list[ParamSpec]:
    """ParamSpecs of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in fields(config_cls):
        meta: dict[str, Any] = dict(f.metadata or {})
        choices = meta.get("choices")
        tp = hints.get(f.name, type(f.default))
        if choices is None and isinstance(tp, type) and issubclass(tp, enum.Enum):
            choices = tp
        if isinstance(choices, type) and issubclass(choices, enum.Enum):
            choices = tuple(choices)
        default = f.default if f.default is not MISSING else None
        out.append(
            ParamSpec(
                f.name,
                _type_name(tp),
                default,
                meta.get("help", ""),
                meta.get("range"),
                tuple(choices) if choices else None,
                meta.get("step"),
                bool(meta.get("advanced")),
            )
        )
    return out


def _kind(v) -> str:
    return f"{v!r} ({type(v).__name__})"


def type_problem(tp, v) -> str | None:
    """What ``v`` should be when it does not have the declared type ``tp``, else None.

    Strict on purpose: a bool is not an int, a float is not an int (1.5 epochs), a list is not an int,
    a string is not a number. Types this does not know (``Any``, nested configs) are not checked.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(types, "UnionType", ())):
        options = typing.get_args(tp)
        if any(type_problem(o, v) is None for o in options):
            return None
        return " or ".join(p for o in options if (p := type_problem(o, v)))
    if tp is type(None):
        return None if v is None else "None"
    if tp is bool:
        return None if isinstance(v, (bool, np.bool_)) else "true or false"
    if tp is int:
        return (
            None if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) else "an integer"
        )
    if tp is float:
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        return None if ok else "a number"
    if tp is str:
        return None if isinstance(v, str) else "a string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return None if isinstance(v, (tp, str)) else f"one of {[e.value for e in tp]}"
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(v, tuple):
            return "a list of values"
        if len(args) == 2 and args[1] is Ellipsis:
            inner = [args[0]] * len(v)
        elif args:
            if len(args) != len(v):
                return f"a list of {len(args)} values"
            inner = list(args)
        else:
            return None
        for k, (t, x) in enumerate(zip(inner, v)):
            problem = type_problem(t, x)
            if problem:
                return f"a list whose entries are {problem} (entry {k} is {_kind(x)})"
        return None
    return None


def check_types(config_cls, values: dict[str, Any]) -> None:
    """TypeError naming ``Class.field``, the expected and the actual value, for each wrongly typed value."""
    hints = typing.get_type_hints(config_cls)
    for name, v in values.items():
        problem = type_problem(hints.get(name, Any), v)
        if problem:
            raise TypeError(f"{config_cls.__name__}.{name} must be {problem}, got {_kind(v)}")


def validate(config) -> None:
    """Raise TypeError naming the field when a value has the wrong type (a bool or a list is not an int),
    ValueError when it is outside its range/choices or not finite."""
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    check_types(type(config), values)
    for spec in describe(type(config)):
        v = getattr(config, spec.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{type(config).__name__}.{spec.name} must be a finite number, got {v!r}")
        if spec.range is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = spec.range
            if not (lo <= v <= hi):
                raise ValueError(f"{type(config).__name__}.{spec.name} must be in [{lo}, {hi}], got {v!r}")
        if spec.range is not None and isinstance(v, tuple):  # a range on a tuple field bounds every entry
            lo, hi = spec.range
            bad = [x for x in v if isinstance(x, (int, float)) and not lo <= x <= hi]
            if bad:
                raise ValueError(
                    f"{type(config).__name__}.{spec.name} entries must be in [{lo}, {hi}], got {v!r}"
                )
        if spec.choices is not None and v not in spec.choices:
            allowed = [_jsonable(c) for c in spec.choices]
            raise ValueError(f"{type(config).__name__}.{spec.name} must be one of {allowed}, got {v!r}")


def _coerce(text: str, tp, current):
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"expected one of {[e.value for e in tp]}, got {text!r}") from None
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if tp in (int, float, str):
        return tp(text)
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        inner = args[0] if args else float
        return tuple(inner(x) for x in text.replace("(", "").replace(")", "").split(",") if x.strip())
    if _union_with_tuple(tp):  # "50" -> 50, "100, 60, 20" -> (100, 60, 20), "" -> ()
        for option in typing.get_args(tp):
            try:
                return _coerce(text, option, current)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"expected a number or numbers separated by commas, got {text!r}")
    return type(current)(text)


def from_overrides(config_cls, overrides: dict[str, Any] | None = None, *, parse_strings: bool = True, **kw):
    """Build and validate a config from ``{name: value_or_string}`` (CLI ``--set`` and UI).

    Strings are parsed into the field's type (``"4, 2, 1"`` -> ``(4, 2, 1)``) unless ``parse_strings`` is
    False (typed sources such as JSON/TOML recipes: there ``"epochs": "10"`` is a type error). Lists
    become tuples for tuple fields. Wrong types raise TypeError naming the field (see :func:`type_problem`).
    """
    overrides = {**(overrides or {}), **kw}
    hints = typing.get_type_hints(config_cls)
    names = {f.name: f for f in fields(config_cls)}
    values = {}
    for k, v in overrides.items():
        if k not in names:
            raise ValueError(f"unknown parameter {k!r} for {config_cls.__name__}; known: {sorted(names)}")
        if isinstance(v, str) and hints[k] is not str and parse_strings:
            try:
                v = _coerce(v, hints[k], names[k].default)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{config_cls.__name__}.{k}: {e}") from None
        if isinstance(v, list) and (typing.get_origin(hints[k]) is tuple or _union_with_tuple(hints[k])):
            v = tuple(v)  # JSON / Python lists for tuple fields
        values[k] = v
    check_types(config_cls, values)  # before construction: __post_init__ may rely on the types
    cfg = config_cls(**values)
    validate(cfg)
    return cfg


def to_dict(config) -> dict:
    """JSON-friendly dict of a config instance."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in fields(config)}


def settings_of(config) -> dict | None:
    """The settings a result ran with (``RegistrationResult.config``) as JSON-ready values by field: a config
    dataclass through :func:`to_dict`, a dict (a run folder read back) as it is, anything else None."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return to_dict(config)
    return dict(config) if isinstance(config, dict) else None
