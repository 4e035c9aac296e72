"""What the web inbox does for every request, whatever the page: security headers on
every response (500s and 404s included), refusing ``Host`` names it does not serve, and
keeping magic-link tokens out of the access log.

::

    app = harden(Starlette(routes=...), public_url="https://inbox.example.com",
                 trusted_hosts=None)          # None: the public URL's host and loopback
    redact_access_log()                       # before uvicorn serves: no tokens logged

* **Headers.** :data:`SECURITY_HEADERS` (a Content-Security-Policy that allows no
  script, no framing, no referrer, no caching) and, when the public URL is https,
  ``Strict-Transport-Security``. They are added by an ASGI wrapper *outside*
  Starlette's ``ServerErrorMiddleware``, so the bare "Internal Server Error" page of
  an unexpected exception carries them too; a header a page set itself is kept.
* **Hosts.** Starlette's ``TrustedHostMiddleware`` answers 400 to a ``Host`` that is
  not the public URL's host or a loopback name (or what TASKLOOM_TRUSTED_HOSTS lists).
  A DNS-rebinding page (an attacker's name resolved to 127.0.0.1) sends the attacker's
  name as ``Host``, so it reaches nothing, not even ``/signin``.
* **Logs.** :func:`redact_access_log` filters uvicorn's loggers so that a ``link=`` or
  ``token=`` query value, plain or percent-encoded inside ``next=``, is written as
  ``[redacted]``, with ``--debug`` as without.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "HSTS",
    "LOOPBACK_HOSTS",
    "RUN_PAGE_CSP",
    "SECURITY_HEADERS",
    "TokenRedactor",
    "default_trusted_hosts",
    "harden",
    "redact",
    "redact_access_log",
    "security_headers",
]

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # a magic link's token must not leak onwards
    "Cache-Control": "no-store",
}
"""Headers every response of the web inbox carries."""

RUN_PAGE_CSP = (
    SECURITY_HEADERS["Content-Security-Policy"] + "; script-src 'self'; connect-src 'self'"
)
"""The policy of a live run page: the one script of the site's own (``/static/run.js``,
never inline) and its event stream; everything else as :data:`SECURITY_HEADERS`."""

HSTS = "max-age=31536000"
"""``Strict-Transport-Security`` when the public URL is https: a year, this host only.
Not ``includeSubDomains`` or ``preload``: the inbox usually lives on one name of a
domain whose other hosts it cannot speak for."""

LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
"""Names always trusted by default: the machine itself (health checks, an operator's
browser on the host, an SSH tunnel)."""


def security_headers(public_url: str) -> dict[str, str]:
    """:data:`SECURITY_HEADERS`, with :data:`HSTS` when ``public_url`` is https."""
    headers = dict(SECURITY_HEADERS)
    if public_url.lower().startswith("https://"):
        headers["Strict-Transport-Security"] = HSTS
    return headers


def default_trusted_hosts(public_url: str) -> list[str]:
    """The ``Host`` names served when TASKLOOM_TRUSTED_HOSTS is unset: the host of
    ``public_url`` (where links point, so where people arrive) and :data:`LOOPBACK_HOSTS`.

    >>> default_trusted_hosts("https://Inbox.Example.com:8443/")
    ['inbox.example.com', 'localhost', '127.0.0.1', '[::1]']
    """
    host = urlsplit(public_url).hostname or ""
    if ":" in host:  # an IPv6 literal: the Host header brackets it
        host = f"[{host}]"
    return list(dict.fromkeys([h for h in (host.lower(), *LOOPBACK_HOSTS) if h]))


def harden(
    app: Starlette, *, public_url: str, trusted_hosts: Sequence[str] | None = None
) -> Starlette:
    """``app`` refusing untrusted ``Host`` headers (400) and adding
    :func:`security_headers` to every response, error pages included. ``trusted_hosts``
    ``None`` (or empty) means :func:`default_trusted_hosts`; ``["*"]`` trusts any.
    Call it last: no middleware can be added to ``app`` afterwards."""
    hosts = list(trusted_hosts or default_trusted_hosts(public_url))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    # Starlette puts every user middleware inside ServerErrorMiddleware, whose 500 page
    # would then go out bare; building the stack here lets the headers wrap it too.
    app.middleware_stack = SecurityHeaders(
        app.build_middleware_stack(), headers=security_headers(public_url)
    )
    return app


class SecurityHeaders:
    """ASGI middleware: add ``headers`` to every HTTP response that lacks them."""

    def __init__(self, app: ASGIApp, *, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = dict(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- the access log -----------------------------------------------------------------------
_SECRET_PARAM = re.compile(
    # a parameter starts the query, follows "&", or is percent-encoded inside another's
    # value (``next=%2Fitems%2F...%3Flink%3D...``)
    r"(?i)((?:^|[?&;\s]|%3F|%26)(?:link|token)(?:=|%3D))(?:(?!&|%26)[^\s\"'])+"
)


def redact(text: str) -> str:
    """``text`` with the value of every ``link=`` / ``token=`` parameter replaced.

    >>> redact("GET /items/r/1?link=abc.def&x=1")
    'GET /items/r/1?link=[redacted]&x=1'
    """
    return _SECRET_PARAM.sub(r"\1[redacted]", text)


class TokenRedactor(logging.Filter):
    """A logging filter that :func:`redact`\\ s a record's message and its arguments
    (uvicorn's access log passes the request path as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


_UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact_access_log() -> None:
    """Filter uvicorn's loggers through :class:`TokenRedactor` (once; call it after
    ``uvicorn.Config`` is made, which configures those loggers)."""
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactor) for f in logger.filters):
            logger.addFilter(TokenRedactor())
