"""Signed values for the web inbox (session cookies, magic links) and the secret behind them.

A signed value is ``<payload>.<signature>``: the payload is URL-safe base64 of compact
JSON, the signature HMAC-SHA256 over the payload's text with a key derived from the
secret and the value's *purpose*. A session cookie is therefore never accepted as a
magic link, nor the reverse, and changing any character of either part is caught: the
signature is compared as text, so two spellings of the same bytes do not both pass.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from taskloom.errors import ConfigurationError
from taskloom.settings import Settings

__all__ = ["MIN_SECRET_CHARS", "SECRET_FILE", "Signer", "load_secret"]

SECRET_FILE = "secret"
"""The file under ``Settings.data_dir`` that keeps the secret when none is configured."""
MIN_SECRET_CHARS = 32


def load_secret(settings: Settings, *, create: bool = True) -> str:
    """The secret that signs sessions and magic links.

    ``Settings.secret`` (TASKLOOM_SECRET) if set; else the one kept in
    ``<data_dir>/secret``, made there (mode 0600) on first use when ``create``. The
    server and ``taskloom link create`` must see the same secret, so set
    TASKLOOM_SECRET wherever they do not share a data directory.
    """
    if settings.secret is not None:
        return _checked(settings.secret, "TASKLOOM_SECRET")
    path = Path(settings.data_dir) / SECRET_FILE
    try:
        return _checked(path.read_text().strip(), str(path))
    except FileNotFoundError:
        if not create:
            raise ConfigurationError(
                f"no secret to sign with: set TASKLOOM_SECRET (at least {MIN_SECRET_CHARS} "
                f"characters) or run `taskloom serve` once to make {path}"
            ) from None
    return _checked(_create(path), str(path))


def _checked(secret: str, where: str) -> str:
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigurationError(
            f"the secret in {where} has {len(secret)} characters; use at least "
            f"{MIN_SECRET_CHARS}, e.g. `python -c 'import secrets; "
            f"print(secrets.token_urlsafe(48))'`"
        )
    return secret


def _create(path: Path) -> str:
    """Write a new random secret to ``path`` (0600) unless another process got there
    first; either way return the secret the file holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic, and never replaces a secret already there
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks small JSON objects with HMAC-SHA256, one key per purpose::

    signer = Signer(secret)
    value = signer.sign("session", {"u": "ana"})
    signer.unsign("session", value)  # {"u": "ana"}
    signer.unsign("link", value)  # None: another purpose
    """

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._keys: dict[str, bytes] = {}

    def _key(self, purpose: str) -> bytes:
        key = self._keys.get(purpose)
        if key is None:
            key = hmac.new(self._secret, f"taskloom/{purpose}".encode(), hashlib.sha256).digest()
            self._keys[purpose] = key
        return key

    def mac(self, purpose: str, message: str) -> str:
        """The HMAC-SHA256 of ``message`` under ``purpose``'s key, URL-safe base64."""
        return _b64(hmac.new(self._key(purpose), message.encode(), hashlib.sha256).digest())

    def sign(self, purpose: str, data: dict[str, Any]) -> str:
        """``data`` as a signed, URL-safe string."""
        payload = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{self.mac(purpose, payload)}"

    def unsign(self, purpose: str, value: str) -> dict[str, Any] | None:
        """The object signed in ``value`` for ``purpose``; ``None`` if the value was
        changed, was signed for another purpose or with another secret, or is not one."""
        payload, dot, signature = value.partition(".")
        if (
            not dot
            or not payload
            or not hmac.compare_digest(self.mac(purpose, payload).encode(), signature.encode())
        ):
            return None
        try:
            data = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        return data if isinstance(data, dict) else None
