"""Walking JSON data: every string with its dotted path, and copies with strings
replaced."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["map_strings", "strings", "where"]


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(path, text)`` for every string in ``value`` (dict values and list items, not
    keys); ``path`` is dotted (``contact.emails.0``), ``""`` for the value itself."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from strings(item, f"{path}.{i}" if path else str(i))


def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """A copy of ``value`` with ``change`` applied to every string; ``value`` is left
    as it was."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {key: map_strings(item, change) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [map_strings(item, change) for item in value]
    return value


def where(path: str) -> str:
    """``in field 'a.b'``, or ``in the output`` for the root."""
    return f"in field {path!r}" if path else "in the output"
