"""JSON in and out of Redis, with errors that name the offending value.

Nothing that crosses Redis is pickled: values are JSON, and pydantic models are dumped
to their JSON form.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from json import decoder as _json_decoder
from json import encoder as _json_encoder
from typing import Any

from taskloom.errors import SerializationError

__all__ = ["digest", "dumps", "dumps_spliced", "loads"]


def _default(value: Any) -> Any:
    # pydantic is not imported for this: a process that has not imported it (a worker of
    # plain engine code) holds no model to dump.
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = json.JSONEncoder(separators=(",", ":"), default=_default, allow_nan=False).encode


def _c_encoder() -> Any:
    """The C encoder that ``_encode`` builds anew on every call, built once: no markers
    (so it keeps no state between calls and any thread may use it), hence no check for
    circular values, which :func:`dumps` leaves to ``_encode`` when this one fails.
    ``None`` where CPython's accelerator is missing or its signature differs."""
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encoder = make(
            None, _default, _json_encoder.encode_basestring_ascii, None, ":", ",",
            False, False, False,
        )  # fmt: skip
        sample = {"a": [1, 2.5, None, True, "\u00e9"], "b": {}}
        if "".join(encoder(sample, 0)) != _encode(sample):
            return None
    except Exception:  # another CPython's signature: the plain path serves
        return None
    return encoder


_fast_encode = _c_encoder()
_decoder: Any = _json_decoder.JSONDecoder()  # its scan_once is missing from the stubs
_scan = _decoder.scan_once


def dumps(value: Any, *, what: str = "value") -> str:
    """Serialize ``value`` to compact JSON; ``what`` names it in the error message."""
    if _fast_encode is not None:
        try:
            return "".join(_fast_encode(value, 0))
        except Exception:  # the plain encoder below says what is wrong
            pass
    try:
        return _encode(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"{what} cannot be stored: {exc}. Pass JSON-serializable values (dict, list, "
            f"str, int, float, bool, None) or pydantic models, and convert other objects "
            f"first."
        ) from None


def dumps_spliced(value: Mapping[str, Any], key: str, text: str) -> str:
    """``value`` as :func:`dumps` writes it, with the JSON ``text`` as ``key``'s value:
    a part encoded once already (a run's result, checked as it ended) is not encoded
    again. ``key`` comes last (JSON objects have no order)."""
    rest = dumps({k: v for k, v in value.items() if k != key})
    return f"{rest[:-1]}{',' if len(rest) > 2 else ''}{dumps(key)}:{text}}}"


def loads(text: str | bytes) -> Any:
    """Parse JSON produced by :func:`dumps`."""
    if type(text) is str:
        try:  # the C scanner directly: json.loads wraps it in two Python calls
            value, end = _scan(text, 0)
        except StopIteration:
            return json.loads(text)  # raises the decoder's own error
        if end == len(text):
            return value
    return json.loads(text)  # bytes, surrounding whitespace, or an error to report


def digest(text: str) -> str:
    """A short, stable content hash (used to compare run inputs)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]
