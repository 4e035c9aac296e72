"""What Redis refuses, told apart from an outage.

A server that cannot be reached may come back, so taskloom waits for it. A server that
answers "no" gives the same answer to every retry: a wrong or missing password, a
disabled user, a command or key an ACL user may not use, a TLS certificate the client
does not trust, TLS spoken to a port that serves plain Redis, a single-Redis URL given
for a cluster node or a cluster URL for a single Redis. Those are reported at
once as :class:`~taskloom.errors.RedisRefusedError`, with what to change.

redis-py raises a refused login as ``AuthenticationError``, a subclass of its
``ConnectionError``, and a failed TLS handshake as a ``ConnectionError`` caused by an
``ssl.SSLError``; both look like an outage to a retry on ``ConnectionError``.
:func:`is_refusal` is the test the client's retry policy applies first.

No message here holds a credential: the server's own words never echo the password,
and the connection is described by host, port, socket path and user name only.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    NoPermissionError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from taskloom.errors import RedisRefusedError
from taskloom.redaction import redact_text

__all__ = [
    "NotTLSError",
    "SpeaksTLSError",
    "Where",
    "cluster_node",
    "is_refusal",
    "not_a_cluster",
    "refusal",
    "refused_replies",
]

_URL_SETTING = "the Redis URL (TASKLOOM_REDIS_URL, REDIS_URL or --redis-url)"
_CLUSTER_REPLIES = ("MOVED ", "ASK ", "CLUSTERDOWN")
"""Replies only a cluster node gives a client that is not a cluster client."""
_TRANSIENT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
"""A handshake cut short: the server went away mid-way, which an outage does too."""


class NotTLSError(ssl.SSLError):
    """The server at a ``rediss://`` address answered a plain ``PING``: it speaks
    Redis without TLS there (raised by the TLS connection, found by a check)."""


class SpeaksTLSError(ssl.SSLError):
    """The server at a ``redis://`` address dropped a plain connection and answered a
    TLS handshake: it serves only TLS there (raised by the plain connection, found by a
    check)."""


@dataclass(frozen=True, slots=True)
class Where:
    """The connection a refusal came from, as messages name it (no credentials)."""

    server: str = "the Redis server"
    """``host:port`` or the socket path."""
    user: str = "default"
    url_form: str = "redis://USER:PASSWORD@HOST:PORT/DB"
    """The shape of a URL for this server, with placeholders for the credentials."""
    prefix: str = "tl"
    cluster: bool = False
    """Whether the client is a Redis Cluster client."""

    @classmethod
    def of(
        cls, kwargs: dict[str, Any], *, tls: bool, prefix: str = "tl", cluster: bool = False
    ) -> Where:
        """From a redis-py connection pool's ``connection_kwargs``."""
        user = str(kwargs.get("username") or "default")
        db = kwargs.get("db") or 0
        path = kwargs.get("path")
        if path:
            return cls(str(path), user, f"unix://USER:PASSWORD@{path}?db={db}", prefix)
        server = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        scheme = "rediss" if tls else "redis"
        if cluster:
            return cls(server, user, f"{scheme}+cluster://USER:PASSWORD@{server}", prefix, True)
        return cls(server, user, f"{scheme}://USER:PASSWORD@{server}/{db}", prefix)


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind ``exc``, if one is among its causes."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _refused_command(exc: BaseException) -> bool:
    """A command (or a command inside a script) an ACL user may not run, or a key it
    may not touch."""
    if isinstance(exc, NoPermissionError):
        return True
    text = str(exc)
    return isinstance(exc, ResponseError) and (
        text.startswith("NOPERM") or "The user executing the script can't" in text
    )


def _cluster_reply(exc: BaseException) -> bool:
    """A reply that only a Redis Cluster node gives (a redirect, the cluster down): to
    a client that is not a cluster client, it says the URL names the wrong mode."""
    if isinstance(exc, AskError | ClusterDownError):  # MovedError is an AskError
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_CLUSTER_REPLIES)


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis saying no (retrying gets the same answer) rather than
    Redis out of reach."""
    if isinstance(exc, AuthenticationError | AuthorizationError) or _refused_command(exc):
        return True
    if not isinstance(exc, RedisConnectionError):
        return False
    cause = _tls_cause(exc)
    return cause is not None and not isinstance(cause, _TRANSIENT_TLS)


def refusal(exc: BaseException, where: Where | None = None) -> RedisRefusedError | None:
    """``exc`` as a :class:`RedisRefusedError` saying what to fix, or ``None`` if it is
    no refusal (an outage, a bug, a wrong argument)."""
    w = where or Where()
    if not w.cluster and _cluster_reply(exc):
        return cluster_node(w)
    if not is_refusal(exc):
        return None
    # Only the server's words: a pipeline's error names the command and its arguments.
    said = redact_text(str(exc).rpartition("caused error: ")[2]).strip().rstrip(".")
    if _refused_command(exc):
        return _permission(w, said)
    tls = _tls_cause(exc)
    if tls is not None:
        return _tls(w, tls)
    return _login(w, said)


def _refused(message: str, fix: str, kind: str) -> RedisRefusedError:
    return RedisRefusedError(f"{message}: {fix}", kind=kind, fix=fix)


def _login(w: Where, said: str) -> RedisRefusedError:
    lowered = said.lower()
    if "without any password configured" in lowered or "no password is set" in lowered:
        return _refused(
            f"Redis at {w.server} has no password, and the Redis URL sends one ({said})",
            f"take the user and password out of {_URL_SETTING}, or give the server a "
            f"password (requirepass, or an ACL user)",
            "no_password_set",
        )
    if "authentication required" in lowered or "must be called with the client already" in (
        lowered
    ):
        return _refused(
            f"Redis at {w.server} asks for a password, and the Redis URL gives none",
            f"put it in {_URL_SETTING}: {w.url_form.replace('USER:', ':')}, or "
            f"{w.url_form} for an ACL user",
            "no_password",
        )
    if "password" in lowered or "wrongpass" in lowered:
        who = "the default user" if w.user == "default" else f"user {w.user!r}"
        return _refused(
            f"authentication failed: Redis at {w.server} refused the password of {who} ({said})",
            f"correct the password (or user name) in {_URL_SETTING}, as {w.url_form}, or "
            f"enable the user on the server (ACL SETUSER {w.user} on)",
            "wrong_password",
        )
    return _refused(
        f"Redis at {w.server} refused the login of user {w.user!r} ({said})",
        f"check the user name and password in {_URL_SETTING}, as {w.url_form}",
        "login",
    )


def cluster_node(w: Where) -> RedisRefusedError:
    """The refusal for a single-Redis URL that names a node of a Redis Cluster."""
    scheme, _, rest = w.url_form.partition("://")
    server = rest.rpartition("@")[2].partition("/")[0]
    return _refused(
        f"Redis at {w.server} is a node of a Redis Cluster, and the Redis URL names a single Redis",
        f"use {scheme}+cluster://{server} in {_URL_SETTING} (any node of the cluster), "
        f"or set TASKLOOM_REDIS_CLUSTER=1",
        "cluster_mode",
    )


def not_a_cluster(w: Where) -> RedisRefusedError:
    """The refusal for a cluster URL (or TASKLOOM_REDIS_CLUSTER=1) that names a Redis
    without cluster mode."""
    scheme = w.url_form.partition("+cluster://")[0] if "+cluster" in w.url_form else "redis"
    return _refused(
        f"Redis at {w.server} is not in cluster mode, and the Redis URL names a Redis Cluster",
        f"use {scheme}://{w.server}/0 in {_URL_SETTING} and unset TASKLOOM_REDIS_CLUSTER, "
        f"or start the server with cluster-enabled yes",
        "not_cluster",
    )


def _permission(w: Where, said: str) -> RedisRefusedError:
    return _refused(
        f"Redis at {w.server} refused a command to user {w.user!r} ({said})",
        f"let that user run taskloom's commands on its keys (for example `ACL SETUSER "
        f"{w.user} on +@all ~{w.prefix}:*`; {w.prefix} is TASKLOOM_KEY_PREFIX), or put a "
        f"user that may in {_URL_SETTING}",
        "permission",
    )


def _tls(w: Where, cause: ssl.SSLError) -> RedisRefusedError:
    reason = redact_text(str(getattr(cause, "reason", None) or cause))
    if isinstance(cause, NotTLSError) or "WRONG_VERSION_NUMBER" in str(cause):
        return _refused(
            f"Redis at {w.server} does not speak TLS (a rediss:// URL asks for it)",
            f"use redis:// instead of rediss:// in {_URL_SETTING}, or the port the "
            f"server serves TLS on (its tls-port)",
            "not_tls",
        )
    if isinstance(cause, SpeaksTLSError):
        return _refused(
            f"Redis at {w.server} speaks TLS (a redis:// URL asks for plain Redis)",
            f"use rediss:// instead of redis:// in {_URL_SETTING}, adding "
            f"?ssl_ca_certs=/path/to/ca.pem if a CA this machine does not trust signed "
            f"its certificate",
            "tls_required",
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = redact_text(cause.verify_message or reason)
        return _refused(
            f"the TLS certificate of Redis at {w.server} is not trusted ({detail})",
            f"name the CA certificate that signed it in {_URL_SETTING}, as "
            f"rediss://{w.server}/0?ssl_ca_certs=/path/to/ca.pem, and connect by a host "
            f"name the certificate holds",
            "tls_untrusted",
        )
    if "CERTIFICATE_REQUIRED" in str(cause) or "UNKNOWN_CA" in str(cause):
        return _refused(
            f"Redis at {w.server} refused this client's TLS certificate ({reason})",
            f"give a client certificate the server trusts in {_URL_SETTING}: "
            f"?ssl_certfile=/path/to/client.pem&ssl_keyfile=/path/to/client.key",
            "tls_client_cert",
        )
    return _refused(
        f"the TLS handshake with Redis at {w.server} failed ({reason})",
        "check the TLS options of the rediss:// URL (ssl_ca_certs, ssl_certfile, "
        "ssl_keyfile) against the server's tls-* settings",
        "tls",
    )


def refused_replies(replies: list[Any], where: Where) -> list[Any]:
    """A pipeline's replies (``raise_on_error=False``) with each refusal among their
    errors as a :class:`RedisRefusedError`, for the single-Redis and cluster pipelines
    alike; changed in place and returned."""
    for i, reply in enumerate(replies):
        if isinstance(reply, ResponseError):
            replies[i] = refusal(reply, where) or reply
    return replies
