"""How times, ages and values read on a screen: shared by the CLI and the web pages."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

__all__ = ["MAX_AGE", "clip", "duration", "one_line", "parse_age", "pretty", "span", "when"]

_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_AGE = 3650 * 86400.0
"""The oldest age a filter takes: ten years, in seconds (``400`` digits of seconds
would overflow the millisecond timestamps it is compared with)."""


def when(ms: int | None) -> str:
    """A moment, in UTC to the second (``""`` for none)."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(ms: float) -> str:
    """A length of time, roughly, in its largest unit: ``45s``, ``12m``, ``3h``, ``2d``."""
    s = abs(ms) / 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit}"
    return f"{s:.0f}s"


def duration(ms: float) -> str:
    """A duration to a tenth of a second, or in minutes and hours past one:
    ``0.4s``, ``12.3s``, ``4m05s``, ``2h07m``."""
    s = max(ms, 0) / 1000
    if s < 60:
        return f"{s:.1f}s"
    minutes, rest = divmod(int(s), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def parse_age(text: str) -> float | None:
    """Seconds in ``90``, ``90s``, ``30m``, ``4h``, ``2d``; ``None`` if it is not an age
    or is over :data:`MAX_AGE`."""
    match = _AGE.fullmatch(text)
    if not match:
        return None
    seconds = float(match[1]) * _UNITS[match[2]]
    return seconds if seconds <= MAX_AGE else None


def pretty(value: Any) -> str:
    """Text as it is; anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, with an ellipsis if it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(value: Any, limit: int) -> str:
    """``value`` (text, or the JSON of anything else) on one line, clipped to ``limit``."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return clip(" ".join(text.split()), limit)
