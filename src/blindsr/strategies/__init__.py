"""Training strategies: one file per method, one entry in ``STRATEGIES``.

Adding a method = a new module with a :class:`Strategy` subclass + its class in ``_CLASSES``.
"""

from __future__ import annotations

import difflib

from blindsr.errors import BlindSRError
from blindsr.strategies.amgan import AMGAN
from blindsr.strategies.amgan_rl import AMRL
from blindsr.strategies.amnet import AMNetTraining
from blindsr.strategies.and_ import AND
from blindsr.strategies.base import NoParams, Strategy, Update
from blindsr.strategies.dropout import ChannelDropout
from blindsr.strategies.dual import Dual
from blindsr.strategies.eats import EATS
from blindsr.strategies.plain import Plain

_CLASSES: tuple[type[Strategy], ...] = (Plain, ChannelDropout, EATS, AND, Dual, AMRL,
                                        AMNetTraining, AMGAN)

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in _CLASSES}


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``."""
    if name not in STRATEGIES:
        by_file = {cls.__module__.rsplit(".", 1)[-1]: n for n, cls in STRATEGIES.items()}
        close = difflib.get_close_matches(str(name), list(STRATEGIES), n=1)
        if name in by_file:  # the module's name, e.g. amgan_rl for amrl
            hint = f" (did you mean {by_file[name]!r}, defined in strategies/{name}.py?)"
        else:
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(STRATEGIES))
        raise BlindSRError(f"unknown strategy {name!r}{hint}; known: {known}")
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "NoParams", "Strategy", "Update", "get_strategy"]
