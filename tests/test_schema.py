"""from_plain / to_plain: typed conversion of YAML data with one-line errors naming the path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from blindsr.errors import BlindSRError
from blindsr.schema import bounded, from_plain, to_plain


@dataclass
class Inner:
    lr: float = bounded(1e-3, gt=0)
    kind: Literal["adam", "adamw"] = "adam"


@dataclass
class Outer:
    name: str
    steps: int = bounded(10, ge=1)
    size: int | str = 4
    scale: float | None = None
    pair: tuple[int, int] = (1, 2)
    inner: Inner = field(default_factory=Inner)
    tags: dict[str, float] = field(default_factory=dict)


def test_round_trip_and_coercions():
    plain = {"name": "a", "steps": 3.0, "size": "auto", "scale": None, "pair": [5, 6],
             "inner": {"lr": "1e-4", "kind": "adamw"}, "tags": {"x": 1}}
    obj = from_plain(Outer, plain)
    assert obj == Outer("a", 3, "auto", None, (5, 6), Inner(1e-4, "adamw"), {"x": 1.0})
    assert isinstance(obj.steps, int) and isinstance(obj.tags["x"], float)
    assert from_plain(Outer, to_plain(obj)) == obj
    assert from_plain(Outer, {"name": "b", "size": 7}).size == 7


@pytest.mark.parametrize("plain, message", [
    ({}, "name: missing (required)"),
    ({"name": "a", "stpes": 1}, "unknown key 'stpes' (did you mean 'steps'?)"),
    ({"name": "a", "steps": 0}, "steps: must be >= 1, got 0"),
    ({"name": "a", "steps": 1.5}, "steps: must be an integer, got 1.5"),
    ({"name": "a", "steps": True}, "steps: must be an integer, got True"),
    ({"name": "a", "inner": {"lr": "fast"}}, "inner.lr: must be a number, got 'fast'"),
    ({"name": "a", "inner": {"lr": float("inf")}}, "inner.lr: must be a finite number"),
    ({"name": "a", "inner": {"lr": -1.0}}, "inner.lr: must be > 0"),
    ({"name": "a", "inner": {"kind": "adm"}}, "must be one of adam, adamw, got 'adm' (did you "
                                              "mean 'adam'?)"),
    ({"name": "a", "size": None}, "size: must be int or str, got null"),
    ({"name": "a", "size": [1]}, "size: must be int or str, got [1]"),
    ({"name": "a", "pair": [1]}, "pair: must be a list of 2 values, got [1]"),
    ({"name": "a", "pair": [1, "x"]}, "pair[1]: must be an integer, got 'x'"),
    ({"name": "a", "tags": [1]}, "tags: must be a mapping, got [1]"),
    ({"name": "a", "tags": {"x": "y"}}, "tags.x: must be a number, got 'y'"),
    ({"name": "a", "inner": 3}, "inner: must be a mapping of lr, kind, got 3"),
    ({"name": 5}, "name: must be a string, got 5"),
])
def test_errors_are_one_line_and_name_the_path(plain, message):
    with pytest.raises(BlindSRError) as info:
        from_plain(Outer, plain)
    text = str(info.value)
    assert message in text and "\n" not in text
