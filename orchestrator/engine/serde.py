"""JSON in and out of Redis, with errors that name the offending value.

Nothing that crosses Redis is pickled: values are JSON, and pydantic models are dumped
to their JSON form.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from taskloom.errors import SerializationError

__all__ = ["digest", "dumps", "loads"]


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = json.JSONEncoder(separators=(",", ":"), default=_default, allow_nan=False).encode


def dumps(value: Any, *, what: str = "value") -> str:
    """Serialize ``value`` to compact JSON; ``what`` names it in the error message."""
    try:
        return _encode(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"{what} cannot be stored: {exc}. Pass JSON-serializable values (dict, list, "
            f"str, int, float, bool, None) or pydantic models, and convert other objects "
            f"first."
        ) from None


def loads(text: str | bytes) -> Any:
    """Parse JSON produced by :func:`dumps`."""
    return json.loads(text)


def digest(text: str) -> str:
    """A short, stable content hash (used to compare run inputs)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
