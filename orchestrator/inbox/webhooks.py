"""Webhooks: the signature of a delivery (:func:`sign`, and :func:`verify_signature` for
receivers) and its ``POST`` (:func:`post`).

The signature is Stripe's scheme: an HMAC-SHA256, keyed with the webhook secret, over
the timestamp, a dot and the raw body, in the ``X-Taskloom-Signature`` header as
``t=<timestamp>,v1=<hex>``; see :mod:`taskloom.inbox.notify` for the headers and how
receivers deduplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from taskloom.engine import serde
from taskloom.inbox.deliveries import Try, TryFailed
from taskloom.redaction import redact_text

if TYPE_CHECKING:
    import httpx

__all__ = ["SIGNATURE_TOLERANCE_S", "endpoint_hash", "post", "sign", "verify_signature"]

SIGNATURE_TOLERANCE_S = 300.0
"""How far (seconds, either way) a webhook's signed timestamp may be from the receiver's
clock before :func:`verify_signature` refuses it: Stripe's default, room for clock skew
and a slow network, short enough that a captured delivery soon stops verifying."""


def sign(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The ``X-Taskloom-Signature`` header of ``body`` sent at ``timestamp`` (Unix
    seconds; default now): ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>``.
    """
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_hmac(secret, t, body)}"


def verify_signature(
    body: bytes | str,
    signature: str | None,
    secret: str | Iterable[str],
    *,
    tolerance: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` (the ``X-Taskloom-Signature`` header) signs ``body`` (the raw
    request body) with ``secret`` (or with any of several, while rotating) and was made
    within ``tolerance`` seconds of ``now`` (default: this machine's clock). Compares in
    constant time and never raises: a missing, malformed, non-ASCII, stale or wrong
    header is ``False``. For a receiver::

        if not verify_signature(await request.body(),
                                request.headers.get("X-Taskloom-Signature"), secret):
            return Response(status_code=400)
        # then skip it if its X-Taskloom-Delivery id was already handled
    """
    try:
        return _verify(body, signature, secret, tolerance, now)
    except Exception:  # a receiver's guard must not crash it, whatever arrives
        return False


def _verify(
    body: bytes | str,
    signature: str | None,
    secret: str | Iterable[str],
    tolerance: float,
    now: float | None,
) -> bool:
    if not isinstance(signature, str) or not signature.isascii() or len(signature) > 4096:
        return False
    timestamp, candidates = None, []
    for item in signature.split(","):
        key, eq, value = item.strip().partition("=")
        if key == "t" and eq and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1" and eq:
            candidates.append(value.encode())
    if timestamp is None or not candidates:
        return False
    now = time.time() if now is None else now
    if not abs(now - timestamp) <= tolerance:
        return False
    data = body.encode() if isinstance(body, str) else bytes(body)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    found = False
    for key in secrets:
        if not isinstance(key, str) or not key:
            continue
        expected = _hmac(key, timestamp, data).encode()
        for candidate in candidates:  # no early exit: time does not tell which matched
            found |= hmac.compare_digest(expected, candidate)
    return found


def _hmac(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def endpoint_hash(endpoint: str) -> str:
    """The short, stable name of an endpoint in delivery ids."""
    return hashlib.sha256(endpoint.encode()).hexdigest()[:16]


async def post(http: httpx.AsyncClient, t: Try, *, secret: str, timeout: float) -> None:
    """Send try ``t`` to its webhook, signed with ``secret``, within ``timeout``
    seconds; raises :class:`~taskloom.inbox.deliveries.TryFailed` unless answered 2xx."""
    body = t.event_json.encode()
    event = serde.loads(body)
    sent = int(time.time())  # the receiver's clock judges it: wall time, not ours
    headers = {
        "Content-Type": "application/json",
        "X-Taskloom-Event": str(event.get("kind", "")),
        "X-Taskloom-Delivery": t.id,
        "Idempotency-Key": t.id,
        "X-Taskloom-Timestamp": str(sent),
        "X-Taskloom-Signature": sign(body, secret, timestamp=sent),
    }
    import httpx

    try:
        async with asyncio.timeout(timeout):
            response = await http.post(t.endpoint, content=body, headers=headers)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise TryFailed(redact_text(f"{type(exc).__name__}: {exc}".rstrip(": "))) from None
    if not 200 <= response.status_code < 300:
        raise TryFailed(
            f"HTTP {response.status_code}",
            retry_after=_seconds(response.headers.get("Retry-After")),
        )


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (its HTTP-date form is ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
