"""Typed, UI-describable configs.

Every method/training config is a frozen dataclass whose fields are declared with
:func:`param`, carrying help text and a range or choices. The app builds widgets from
:func:`describe`, the CLI parses ``--set key=value`` with :func:`from_overrides`.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def param(default: Any, help: str, *, range: tuple[float, float] | None = None,
          choices: tuple | type[enum.Enum] | None = None, step: float | None = None,
          advanced: bool = False):
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
    if origin is tuple:
        return "tuple"
    return str(tp)


def describe(config_cls) -> list[ParamSpec]:
    """ParamSpecs of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in fields(config_cls):
        meta = f.metadata or {}
        choices = meta.get("choices")
        tp = hints.get(f.name, type(f.default))
        if choices is None and isinstance(tp, type) and issubclass(tp, enum.Enum):
            choices = tp
        if isinstance(choices, type) and issubclass(choices, enum.Enum):
            choices = tuple(choices)
        default = f.default if f.default is not MISSING else None
        out.append(ParamSpec(f.name, _type_name(tp), default, meta.get("help", ""), meta.get("range"),
                             tuple(choices) if choices else None, meta.get("step"), bool(meta.get("advanced"))))
    return out


def validate(config) -> None:
    """Raise ValueError naming the field when a value is outside its range/choices."""
    for spec in describe(type(config)):
        v = getattr(config, spec.name)
        if spec.range is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = spec.range
            if not (lo <= v <= hi):
                raise ValueError(f"{type(config).__name__}.{spec.name} must be in [{lo}, {hi}], got {v!r}")
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
    return type(current)(text)


def from_overrides(config_cls, overrides: dict[str, Any] | None = None, **kw):
    """Build and validate a config from ``{name: value_or_string}`` (CLI ``--set`` and UI)."""
    overrides = {**(overrides or {}), **kw}
    hints = typing.get_type_hints(config_cls)
    names = {f.name: f for f in fields(config_cls)}
    values = {}
    for k, v in overrides.items():
        if k not in names:
            raise ValueError(f"unknown parameter {k!r} for {config_cls.__name__}; known: {sorted(names)}")
        if isinstance(v, str) and hints[k] is not str:
            try:
                v = _coerce(v, hints[k], names[k].default)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{config_cls.__name__}.{k}: {e}") from None
        values[k] = v
    cfg = config_cls(**values)
    validate(cfg)
    return cfg


def to_dict(config) -> dict:
    """JSON-friendly dict of a config instance."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in fields(config)}
