"""Typed settings from plain data: one generic converter from nested dicts and lists to
dataclasses (and back), with one-line errors that name the offending key.

Used by the training config (:mod:`blindsr.config`) and by each strategy's own ``Params``.
Unknown keys get a "did you mean" suggestion; wrong types and out-of-range numbers (declared with
:func:`bounded`) are reported with their dotted path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

from blindsr.errors import BlindSRError

# ---------------------------------------------------------------------------------------------
# Field helpers


SEED_LIMIT = 2**63  # seeds are < this: torch takes 64-bit seeds, and offsets are added to them


def bounded(default: Any = dataclasses.MISSING, *, gt: float | None = None,
            ge: float | None = None, lt: float | None = None, le: float | None = None,
            **kw: Any) -> Any:
    """A dataclass field whose numeric value (when not None) must satisfy the given bounds."""
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    return field(default=default, metadata={"bounds": bounds}, **kw)


_BOUND_TEXT = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_BOUND_OK = {
    "gt": lambda v, b: v > b,
    "ge": lambda v, b: v >= b,
    "lt": lambda v, b: v < b,
    "le": lambda v, b: v <= b,
}


def fail(path: str, message: str) -> BlindSRError:
    """A one-line config error about the key at ``path``."""
    return BlindSRError(f"config {path}: {message}" if path else f"config: {message}")


def join_path(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# ---------------------------------------------------------------------------------------------
# Generic conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _scalar(tp: type, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail(path, f"must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail(path, f"must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise fail(path, f"must be a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise fail(path, f"must be a finite number, got {value!r}")
            return float(value)
        raise fail(path, f"must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail(path, f"must be a string, got {value!r}")
    raise fail(path, f"unsupported field type {tp!r}")  # a programming error, said plainly


def _union(args: tuple, value: Any, path: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise fail(path, f"must be {' or '.join(_type_name(a) for a in args)}, got null")
    options = [a for a in args if a is not type(None)]
    first_error = None
    for option in options:
        try:
            return from_plain(option, value, path)
        except BlindSRError as e:
            first_error = first_error or e
    if len(options) == 1:
        raise first_error
    raise fail(path, f"must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")


def _literal(args: tuple, value: Any, path: str) -> Any:
    if value in args and not isinstance(value, bool):
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(a) for a in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise fail(path, f"must be one of {', '.join(map(str, args))}, got {value!r}{hint}")


def _sequence(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise fail(path, f"must be a list, got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise fail(path, f"must be a list of {len(args)} values, got {list(value)!r}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(from_plain(a, v, f"{path}[{i}]") for i, (a, v) in pairs)
    item = args[0] if args else Any
    out = [from_plain(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return tuple(out) if origin is tuple else out


def _mapping(tp: Any, value: Any, path: str) -> dict:
    if not isinstance(value, Mapping):
        raise fail(path, f"must be a mapping, got {value!r}")
    args = typing.get_args(tp)
    item = args[1] if len(args) == 2 else Any
    return {str(k): from_plain(item, v, join_path(path, k)) for k, v in value.items()}


def unknown_key(path: str, key: Any, allowed: list[str]) -> BlindSRError:
    """'unknown key' error with a difflib suggestion and the allowed keys."""
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return fail("", f"unknown key {join_path(path, key)!r}{hint}; allowed: {', '.join(allowed)}")


def _check_bounds(f: dataclasses.Field, value: Any, path: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for kind, bound in f.metadata.get("bounds", {}).items():
        if not _BOUND_OK[kind](value, bound):
            raise fail(path, f"must be {_BOUND_TEXT[kind]} {bound}, got {value!r}")


def _check_default(f: dataclasses.Field, path: str) -> None:
    """Run the ``check`` of a section left out of the config (its default must pass too)."""
    if f.default_factory is dataclasses.MISSING:
        return
    check = getattr(f.default_factory(), "check", None)
    if callable(check):
        check(path)


def _dataclass(cls: type, value: Any, path: str) -> Any:
    if isinstance(value, cls):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        keys = ", ".join(f.name for f in dataclasses.fields(cls))
        raise fail(path, f"must be a mapping of {keys}, got {value!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in value:
        if key not in fields:
            raise unknown_key(path, key, list(fields))
    kwargs = {}
    for name, f in fields.items():
        sub = join_path(path, name)
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise fail(sub, "missing (required)")
            _check_default(f, sub)
            continue
        kwargs[name] = from_plain(hints[name], value[name], sub)
        _check_bounds(f, kwargs[name], sub)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(path)
    return obj


def from_plain(tp: Any, value: Any, path: str = "") -> Any:
    """Convert plain YAML data ``value`` to type ``tp`` (dataclasses, lists, tuples, dicts,
    Optional / unions, Literal, bool / int / float / str, Any), raising a one-line
    BlindSRError that names ``path`` on any mismatch."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass(tp, value, path)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(args, value, path)
    if origin is Literal:
        return _literal(args, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        return _sequence(tp, value, path)
    if origin is dict or tp is dict:
        return _mapping(tp, value, path)
    if value is None:
        raise fail(path, f"must be {_type_name(tp)}, got null")
    return _scalar(tp, value, path)


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, recursively (the inverse of :func:`from_plain`)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
