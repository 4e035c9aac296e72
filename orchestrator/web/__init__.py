"""The web inbox (``taskloom serve``): server-rendered pages over Starlette, and magic
links for reviewers outside the team.

::

    from taskloom.web import MagicLinks, create_app, load_secret

    secret = load_secret(orch.settings)             # TASKLOOM_SECRET or <data_dir>/secret
    app = create_app(orch, secret=secret, inbox_token=orch.settings.inbox_token)
    link = await MagicLinks(orch.store, secret=secret).create(task.id, ttl=86400)

Importing this package does not import Starlette: :func:`create_app` loads it on first
use, so the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskloom.inbox.links import DEFAULT_TTL, LinkRefusedError, MagicLink, MagicLinks
from taskloom.inbox.signing import load_secret

if TYPE_CHECKING:
    from taskloom.web.app import create_app

__all__ = [
    "DEFAULT_TTL",
    "LinkRefusedError",
    "MagicLink",
    "MagicLinks",
    "create_app",
    "load_secret",
]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from taskloom.web.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
