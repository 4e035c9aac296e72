"""Range-checked numbers for command-line options: a value out of range is an argparse
error (exit 2) that says the range, never a traceback from deep inside (a 400-digit
``--limit`` reaching Redis, a port past 65535 reaching ``bind()``).

::

    parser.add_argument("--limit", type=int_in(1, 10_000), default=100)
    parser.add_argument("--budget-usd", type=positive_number)
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["MAX_LIMIT", "int_in", "positive_number"]

MAX_LIMIT = 10_000
"""The largest ``--limit`` a listing takes."""


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:  # also more than 4300 digits
            n = None
        if n is None or not low <= n <= high:
            shown = text if len(text) <= 20 else text[:20] + "…"
            raise argparse.ArgumentTypeError(
                f"{shown!r} is not a whole number from {low} to {high}"
            )
        return n

    parse.__name__ = "number"  # argparse names the type in some messages
    return parse


def positive_number(text: str) -> float:
    """An argparse ``type``: a finite number above 0."""
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        shown = text if len(text) <= 20 else text[:20] + "…"
        raise argparse.ArgumentTypeError(f"{shown!r} is not a finite number above 0")
    return x
