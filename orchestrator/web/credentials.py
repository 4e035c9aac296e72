"""How strong the web inbox's tokens must be (TASKLOOM_INBOX_TOKEN, TASKLOOM_METRICS_TOKEN).

The secret (TASKLOOM_SECRET) needs 32 characters because it can be attacked offline:
every cookie and magic link is an HMAC under it, which anyone holding one can test
guesses against at billions a second. The tokens can only be tried online, one request
per guess, and :mod:`taskloom.web.throttle` lets through at most
``Settings.signin_failures_all`` wrong ones per window from everyone together (100 per
5 minutes: about 29,000 a day). 16 characters is then far beyond reach (16 random
URL-safe characters are 96 bits; even 16 lowercase letters are 75), while staying
short enough to paste. Requiring 8 different characters refuses the
``aaaaaaaaaaaaaaaa`` and ``changemechangeme`` kind, which length alone would pass.
"""

from __future__ import annotations

from taskloom.errors import ConfigurationError

__all__ = ["MIN_DISTINCT_CHARS", "MIN_TOKEN_CHARS", "check_token"]

MIN_TOKEN_CHARS = 16
MIN_DISTINCT_CHARS = 8
GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def check_token(token: str | None, *, name: str, secret: str | None = None) -> str:
    """``token`` if it is strong enough to guard the inbox, else a
    :class:`~taskloom.ConfigurationError` naming the variable ``name`` and saying
    how to make a good one. ``secret``: the signing secret, which the token must not be
    (a token is typed into forms and scrape configs; the secret must stay on the server)."""
    how = f"generate one with `{GENERATE}`"
    if not token:
        raise ConfigurationError(f"set {name}: the web inbox needs it; {how}")
    if len(token) < MIN_TOKEN_CHARS or len(set(token)) < MIN_DISTINCT_CHARS:
        raise ConfigurationError(
            f"{name} is too weak ({len(token)} characters, {len(set(token))} different): "
            f"use at least {MIN_TOKEN_CHARS} characters with at least {MIN_DISTINCT_CHARS} "
            f"different ones; {how}"
        )
    if secret is not None and token == secret:
        raise ConfigurationError(
            f"{name} is the same as the secret (TASKLOOM_SECRET) that signs sessions and "
            f"links; give it a value of its own: {how}"
        )
    return token
