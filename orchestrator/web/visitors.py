"""Who a web inbox request comes from (:class:`Visitor`: a session, or a magic link) and
the refusal a handler raises to answer with a message page (:class:`Problem`)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from taskloom.inbox.links import MagicLink
from taskloom.web.sessions import Session

__all__ = ["NAME", "Access", "Handler", "Problem", "Visitor", "task_id_of"]

NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
"""A person's name as decisions record it: 1 to 64 characters, no control characters."""

Access = Literal["public", "user", "item", "metrics"]


@dataclass(frozen=True)
class Visitor:
    """A signed-in (or anonymous) session, or a magic link's holder."""

    session: Session
    link: MagicLink | None = None
    link_csrf: str = ""

    @property
    def csrf(self) -> str:
        return self.link_csrf if self.link else self.session.csrf

    @property
    def by(self) -> str:
        return self.link.by if self.link else self.session.user or ""


class Problem(Exception):
    """Answer with a message page: ``status``, a title and what to do."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


Handler = Callable[[Request, Visitor], Awaitable[Response]]


def task_id_of(request: Request) -> str:
    """The inbox item a ``/items/{run_id}/{seq}`` request is about."""
    return f"{request.path_params['run_id']}/{request.path_params['seq']}"
