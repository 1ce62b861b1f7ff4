"""Name -> object lookups and ``key=value`` option parsing shared by the CLI and the bundle.

The one name -> object table of each kind lives in ``registry.py``; this module holds the
mechanics: looking a name up with an error generated from the table, and checking options
against a function's keyword-only signature (unknown keys raise).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

__all__ = ["check_options", "lookup", "parse_key_values"]

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose from: {', '.join(sorted(table))}")
    return table[name]


def keyword_options(fn: Callable[..., object]) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_options(fn: Callable[..., object], options: Mapping[str, object], *, owner: str, reserved: Iterable[str] = ()) -> None:
    allowed = set(keyword_options(fn)) - set(reserved)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"{owner}: unknown option(s) {unknown}; valid options: {sorted(allowed)}")


def _parse_value(text: str) -> Any:
    """JSON where it parses (numbers, booleans, lists, null), otherwise the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_key_values(items: Iterable[str], *, option: str) -> dict[str, Any]:
    """``["acceleration=4", "mask=random"]`` -> ``{"acceleration": 4, "mask": "random"}``."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        parsed[key] = _parse_value(value.strip())
    return parsed
