"""Declared options: each config key or method option is a dataclass field whose allowed values sit next to it
(`option(0.001, gt=0, fix="use e.g. lr: 0.001")`), and `check_options` checks them all in one place."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hpcfed.errors import ConfigError

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, *, default_factory: Any = _MISSING, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None,
           choices: tuple | None = None, fix: str = "") -> Any:
    """A dataclass field with its range (ge/gt/le/lt bounds, or a tuple of choices) and the fix to suggest."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata = {"bounds": bounds, "choices": choices, "fix": fix}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _range_text(bounds: dict[str, float]) -> str:
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if low and high:
        return f"lie in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return "be positive" if low == ("(", 0) else f"be {'>=' if low[0] == '[' else '>'} {low[1]}"
    return f"be {'<=' if high[0] == ']' else '<'} {high[1]}"


def _in_range(value: float, bounds: dict[str, float]) -> bool:
    return (value >= bounds.get("ge", -math.inf) and value > bounds.get("gt", -math.inf)
            and value <= bounds.get("le", math.inf) and value < bounds.get("lt", math.inf))


def check_options(options: Any, prefix: str = "") -> None:
    """Raise ConfigError for the first field of the dataclass `options` (and of its nested sections) that is not
    finite, not among its choices, or out of its declared range; the key is named as `prefix` + field name."""
    for field in dataclasses.fields(options):
        value, key = getattr(options, field.name), f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            check_options(value, f"{key}.")
            continue
        fix = field.metadata.get("fix") or f"give '{key}' a valid value"
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value}", fix)
        choices, bounds = field.metadata.get("choices"), field.metadata.get("bounds")
        if choices is not None and value not in choices:
            raise ConfigError(key, f"unknown value {value!r}", f"choose one of {list(choices)}")
        if bounds and isinstance(value, (int, float)) and not isinstance(value, bool) and not _in_range(value, bounds):
            raise ConfigError(key, f"must {_range_text(bounds)}, got {value}", fix)
