"""Credentials out of everything taskloom shows: messages, logs, reprs.

A Redis or SMTP URL may carry a password (``redis://:pw@host:6379/0``,
``smtps://user:pw@host:465``, ``unix:///run/redis.sock?password=pw``). Whatever names
such a URL to a person (an error, ``taskloom doctor``, ``repr(settings)``, a log line)
passes it through :func:`redact_url` first, or :func:`redact_text` when the URL sits
inside a longer text such as a driver's error message::

    redact_url("redis://:hunter2@cache:6379/0")   # 'redis://:***@cache:6379/0'
    redact_text("cannot reach rediss://app:pw@db:6380")  # 'cannot reach rediss://app:***@db:6380'

The user name stays (it tells which account was used); the password and query
parameters that carry credentials (``password=``, ``token=``, ...) become ``***``.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_text", "redact_url"]

MASK = "***"
"""What a hidden credential is shown as."""

_SECRET_PARAMS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth",
        "client_secret",
        "key",
        "pass",
        "passwd",
        "password",
        "pwd",
        "secret",
        "sig",
        "signature",
        "token",
    }
)
_HOST_PORT = re.compile(r"(\[[^\]@]*\]|[^:@\[\]]+)(:\d*)?|")
"""An authority without user info: ``host``, ``host:port``, ``[v6]:port`` or none."""
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` with its password (and credential query parameters) replaced by ``***``.

    Never raises: text that is no URL comes back unchanged unless it looks like one
    with a credential in it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = _first(rest, "/?#")
    if not _HOST_PORT.fullmatch(rest[:end]):
        # Maybe user info, whose password may hold an unescaped '/', '?' or '@' (no
        # valid URL, so exactly the one an error message shows): it ends at the last
        # '@' before the query, or else at the last '@' of all.
        query = _first(rest, "?#")
        at = rest.rfind("@", 0, query)
        at = rest.rfind("@") if at == -1 else at
        if at != -1:
            end = at + 1 + _first(rest[at + 1 :], "/?#")
    authority, tail = rest[:end], rest[end:]
    userinfo, at_sign, host = authority.rpartition("@")
    if at_sign:
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}{colon}{MASK if colon else ''}@{host}"
    return f"{scheme}://{authority}{_redact_query(tail)}"


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def _first(text: str, chars: str) -> int:
    """The index of the first of ``chars`` in ``text``, or its length."""
    return min((i for c in chars if (i := text.find(c)) != -1), default=len(text))


def _redact_query(tail: str) -> str:
    path, q, rest = tail.partition("?")
    if not q:
        return tail
    query, hash_, fragment = rest.partition("#")
    params = []
    for param in query.split("&"):
        name, eq, _ = param.partition("=")
        params.append(f"{name}={MASK}" if eq and name.lower() in _SECRET_PARAMS else param)
    return f"{path}?{'&'.join(params)}{hash_}{fragment}"
