"""Sessions of the web inbox: a signed cookie, and for a signed-in person a record in
Redis that the cookie needs to count.

The cookie (HMAC-signed, :mod:`taskloom.inbox.signing`) holds the user, the expiry,
the session's CSRF token and its id. The record, ``Keys.session(id)``, holds the user and
a fingerprint of the sign-in token it was made with (an HMAC of the token under the
secret, so Redis never holds the token). A signed-in cookie counts only while its
record exists and the fingerprint matches today's token:

* signing out deletes the record, so a copy of the cookie made before is refused;
* changing TASKLOOM_INBOX_TOKEN ends every session made with the old one (changing the
  secret ends them too, and every magic link with them).

A visitor who has not signed in gets a cookie-only session that carries the sign-in
form's CSRF token and nothing in Redis, so anonymous requests cannot fill it.

A cookie is only ever set by a request that succeeded (status below 400), and by a
POST only when the handler changed the session (sign-in, sign-out): a refused request,
such as a cross-site POST that arrived without the cookie, never replaces it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from taskloom.engine import serde
from taskloom.engine.clock import Clock
from taskloom.engine.store import Store
from taskloom.inbox.signing import Signer

__all__ = ["SESSION_COOKIE", "Session", "Sessions"]

SESSION_COOKIE = "taskloom_session"
_PURPOSE = "session"


@dataclass
class Session:
    """One visitor's session: ``user`` is ``None`` until they sign in."""

    user: str | None
    csrf: str
    expires_ms: int
    id: str | None = None
    """The server-side record's id (signed-in sessions only)."""
    fresh: bool = False
    """New or changed: the response may set the cookie."""
    changed: bool = False
    """Changed by a handler (signed in or out): even a POST's response sets it."""


class Sessions:
    """Reads, makes, ends and writes sessions (records under ``Keys.session``)."""

    def __init__(
        self,
        store: Store,
        *,
        signer: Signer,
        inbox_token: str,
        ttl: float,
        clock: Clock,
        secure: bool,
    ) -> None:
        self.store, self.signer, self.clock = store, signer, clock
        self.ttl, self.secure = ttl, secure
        self._fingerprint = signer.mac("inbox-token", inbox_token)

    async def load(self, cookie: str | None) -> Session:
        """The session ``cookie`` carries, if it still counts; else a new anonymous one."""
        data = self.signer.unsign(_PURPOSE, cookie) if cookie else None
        if (
            data is None
            or not isinstance(data.get("c"), str)
            or not isinstance(data.get("x"), int)
            or data["x"] <= self.clock.now_ms()
        ):
            return self._anonymous()
        user, sid = data.get("u"), data.get("s")
        if user is None:
            return Session(None, data["c"], data["x"])
        if isinstance(user, str) and isinstance(sid, str) and await self._live(sid, user):
            return Session(user, data["c"], data["x"], sid)
        return self._anonymous()  # signed out, token changed, or a cookie of old

    async def _live(self, sid: str, user: str) -> bool:
        text = await self.store.raw.get(self.store.keys.session(sid))
        record: Any = serde.loads(text) if text else None
        return (
            isinstance(record, dict)
            and record.get("u") == user
            and isinstance(record.get("f"), str)
            and hmac.compare_digest(record["f"].encode(), self._fingerprint.encode())
        )

    def _anonymous(self) -> Session:
        expires = self.clock.now_ms() + int(self.ttl * 1000)
        return Session(None, secrets.token_urlsafe(24), expires, fresh=True)

    async def sign_in(self, session: Session, user: str) -> None:
        """Make ``session`` a new signed-in session of ``user`` (new id, new CSRF
        token), ending the one it was."""
        await self._end(session)
        sid = secrets.token_urlsafe(18)
        record = {"u": user, "f": self._fingerprint, "at": self.clock.now_ms()}
        ttl_ms = max(1, int(self.ttl * 1000))
        await self.store.raw.set(self.store.keys.session(sid), serde.dumps(record), px=ttl_ms)
        fresh = self._anonymous()
        session.user, session.csrf, session.expires_ms, session.id = (
            user,
            fresh.csrf,
            fresh.expires_ms,
            sid,
        )
        session.fresh = session.changed = True

    async def sign_out(self, session: Session) -> None:
        """End ``session`` on the server (every copy of its cookie) and make it anonymous."""
        await self._end(session)
        fresh = self._anonymous()
        session.user, session.csrf, session.expires_ms, session.id = (
            None,
            fresh.csrf,
            fresh.expires_ms,
            None,
        )
        session.fresh = session.changed = True

    async def _end(self, session: Session) -> None:
        if session.id is not None:
            await self.store.raw.delete(self.store.keys.session(session.id))

    @staticmethod
    def may_set_cookie(session: Session, *, method: str, status: int) -> bool:
        """Whether a response with ``status`` to a ``method`` request may (re)set the
        cookie: never on a refusal, and on a POST only for a handler's change."""
        if not session.fresh or status >= 400:
            return False
        return session.changed or method in ("GET", "HEAD")

    def set_cookie(self, response: Response, session: Session) -> None:
        """Write ``session`` into ``response`` as the signed cookie."""
        data: dict[str, Any] = {"u": session.user, "c": session.csrf, "x": session.expires_ms}
        if session.id is not None:
            data["s"] = session.id
        response.set_cookie(
            SESSION_COOKIE,
            self.signer.sign(_PURPOSE, data),
            max_age=int(self.ttl),
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure,
        )
