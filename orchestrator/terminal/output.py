"""What the commands print: a line, flushed at once, and a value cut short to fit one."""

from __future__ import annotations

from typing import Any

from taskloom.display import clip
from taskloom.engine import serde

__all__ = ["out", "short"]


def out(text: str = "") -> None:
    """Print ``text`` and flush, so a reader of a pipe sees each line as it comes."""
    print(text, flush=True)


def short(value: Any, limit: int = 70) -> str:
    """``value`` as JSON, clipped to ``limit`` characters."""
    return clip(serde.dumps(value), limit)
