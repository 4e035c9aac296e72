"""The web inbox's pages: its Jinja templates, rendered with what every page shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from taskloom.display import clip, duration, pretty, span, when
from taskloom.engine.clock import Clock
from taskloom.inbox.links import item_path
from taskloom.web.visitors import Visitor

__all__ = ["Renderer", "run_path"]

_LABELS = {
    "approve": "Approve",
    "reject": "Reject",
    "retry": "Retry with the note",
    "replan": "Re-plan with the note",
}


class Renderer:
    """Renders the package's templates (autoescaped, strict) for a visitor."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.env = Environment(
            loader=PackageLoader("taskloom.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # the templates ship with the package: no stat per render
        )
        self.env.filters.update(when=when, pretty=pretty, span=span, duration=duration, clip=clip)
        self.env.globals.update(item_url=item_path, run_url=run_path, label=_label)

    def render(
        self, visitor: Visitor | None, template: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """Page ``template`` for ``visitor`` (None: a refusal before knowing who asks)."""
        link_mode = visitor is None or visitor.link is not None
        base = {
            "nav": not link_mode,
            "user": None if link_mode or visitor is None else visitor.session.user,
            "csrf": visitor.csrf if visitor else "",
            "link_token": visitor.link.token if visitor and visitor.link else None,
            "now_ms": self.clock.now_ms(),
            "refresh": None,
            "live_url": None,
        }
        html = self.env.get_template(template).render(**(base | context))
        return HTMLResponse(html, status_code=status)

    def parts(
        self, visitor: Visitor, template: str, names: Sequence[str], **context: Any
    ) -> dict[str, str]:
        """Parts of a page: each macro of ``template`` named in ``names`` (``run-head``
        calls ``run_head``) rendered with ``context``, by name."""
        module = self._module(visitor, template, context)
        return {name: str(getattr(module, name.replace("-", "_"))()) for name in names}

    def macro(self, visitor: Visitor, template: str, name: str, *args: Any) -> str:
        """Macro ``name`` of ``template`` called with ``args``."""
        return str(getattr(self._module(visitor, template, {}), name)(*args))

    def _module(self, visitor: Visitor, template: str, context: dict[str, Any]) -> Any:
        base: dict[str, Any] = {"nav": True, "user": visitor.session.user, "csrf": visitor.csrf}
        base |= {"link_token": None, "now_ms": self.clock.now_ms()}
        return self.env.get_template(template).make_module(base | context)

    def message(
        self, visitor: Visitor | None, status: int, title: str, message: str
    ) -> HTMLResponse:
        """A message page: ``status``, a title and what to do."""
        return self.render(visitor, "message.html", status=status, title=title, message=message)


def run_path(run_id: str) -> str:
    """The path of run ``run_id``'s page."""
    return f"/runs/{quote(run_id, safe='')}"


def _label(decision: str) -> str:
    return _LABELS.get(decision, decision.replace("_", " ").capitalize())
