"""Size bounds on the text a run's records keep: error messages and tracebacks.

An exception's message can be any size (a 10 MB response body quoted in it, say). A
stored error keeps at most :data:`ERROR_TEXT_LIMIT` bytes of it, the head and the
tail with ``… N bytes cut …`` between, so that every event, retry and dead letter
made from it stays small and under Redis's limits; when the run's worker has a blob
store, the whole message is kept there and the error references it
(``full_message``, see :meth:`taskloom.engine.payloads.Payloads.error`).

>>> bound_text("a" * 10 + "b" * 10, 10, slack=0)
'aaaaa\\n… 10 bytes cut …\\nbbbbb'
"""

from __future__ import annotations

__all__ = [
    "ERROR_TEXT_LIMIT",
    "ERROR_TEXT_SLACK",
    "HISTORY_TEXT_LIMIT",
    "TRACEBACK_LIMIT",
    "bound_text",
]

ERROR_TEXT_LIMIT = 8 * 1024
"""Bytes of an error message a stored error keeps (head and tail)."""
ERROR_TEXT_SLACK = 1024
"""A message is cut only when it is over the limit by more than this: an error that
quotes a cut one (``activity 'x' failed: <its message>``) is then kept as it is, not
cut a second time."""
HISTORY_TEXT_LIMIT = 512
"""Bytes of each attempt's message in an activity's attempt history (the last error is
kept in full, up to :data:`ERROR_TEXT_LIMIT`, beside it)."""
TRACEBACK_LIMIT = 4096
"""Bytes of a stored traceback (its first frames and its last)."""

_MARK = "\n… {} bytes cut …\n"


def bound_text(text: str, limit: int, *, slack: int = ERROR_TEXT_SLACK) -> str:
    """``text`` if its UTF-8 is at most ``limit + slack`` bytes, else its first and
    last ``limit / 2`` bytes with ``… N bytes cut …`` between them."""
    if len(text) * 4 <= limit + slack:  # cheap: no encoding needed for short text
        return text
    data = text.encode()
    if len(data) <= limit + slack:
        return text
    half = limit // 2
    head = data[:half].decode(errors="ignore")  # a character split at the cut is dropped
    tail = data[len(data) - half :].decode(errors="ignore")
    cut = len(data) - len(head.encode()) - len(tail.encode())
    return head + _MARK.format(cut) + tail
