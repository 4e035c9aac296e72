"""The fake's journal: every request as it arrived and how it was answered, the tokens
billed, and the problems met while serving (for ``assert_complete``)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from ._http import HttpRequest
from ._records import Protocol, Request, TokenCounter, TokenEvent
from ._wire import Outcome

__all__ = ["Journal"]

_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "x-goog-api-key"}
)


class Journal:
    """What the fake saw, safe to read from any thread while it serves.

    ``clock`` stamps each request's ``received_at`` (and so the token events)."""

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._problems: list[str] = []
        self.tokens = TokenCounter()
        """Tokens billed per model, with timestamps."""

    @property
    def requests(self) -> list[Request]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> Request:
        """The latest request (AssertionError if none arrived)."""
        with self._lock:
            if not self._requests:
                raise AssertionError("the fake LLM has received no request")
            return self._requests[-1]

    @property
    def problems(self) -> list[str]:
        """What went wrong while serving, in order."""
        with self._lock:
            return list(self._problems)

    def problem(self, text: str) -> None:
        """Note something that went wrong (``assert_complete`` reports it)."""
        with self._lock:
            self._problems.append(text)

    def record(self, http: HttpRequest, *, protocol: Protocol, body: dict[str, Any]) -> Request:
        """Add a request that arrived now, its secret headers redacted."""
        headers = {k: "<redacted>" if k in _SECRET_HEADERS else v for k, v in http.headers.items()}
        with self._lock:
            req = Request(
                index=len(self._requests),
                protocol=protocol,
                method=http.method,
                path=http.path,
                body=body,
                headers=headers,
                received_at=self._clock(),
            )
            self._requests.append(req)
        return req

    def update(self, req: Request, **changes: Any) -> Request:
        """Replace the recorded ``req`` with ``changes`` applied (its step, its status)."""
        updated = dataclasses.replace(req, **changes)
        with self._lock:
            self._requests[req.index] = updated
        return updated

    def bill(self, req: Request, outcome: Outcome) -> None:
        """Count the tokens of a reply, at its request's arrival time."""
        self.tokens._add(
            TokenEvent(
                at=req.received_at,
                model=req.model,
                protocol=req.protocol,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
            )
        )
