"""The web inbox's item pages: the list of open items, an item's page with its
decision form, and the magic links the team makes and revokes there."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from taskloom.client import Orchestrator
from taskloom.display import MAX_AGE, parse_age, span, when
from taskloom.engine.clock import Clock
from taskloom.engine.human import HumanTask
from taskloom.inbox.links import LinkRefusedError, MagicLink, MagicLinks, item_path
from taskloom.web.forms import edit_form
from taskloom.web.rendering import Renderer
from taskloom.web.visitors import NAME, Problem, Visitor, task_id_of

__all__ = ["LINK_TTLS", "MAX_LIST", "MAX_NOTE", "ItemPages"]

MAX_NOTE = 10_000
MAX_LIST = 1000

LINK_TTLS = (("86400", 86400.0), ("259200", 259200.0), ("604800", 604800.0))
"""Lifetimes offered for a magic link made on an item's page: 1, 3 and 7 days."""


class ItemPages:
    """The handlers of ``/`` and ``/items/...``; ``read_form`` reads a POSTed form and
    checks its CSRF token."""

    def __init__(
        self,
        orch: Orchestrator,
        *,
        links: MagicLinks,
        pages: Renderer,
        clock: Clock,
        read_form: Callable[[Request, Visitor], Awaitable[dict[str, str]]],
    ) -> None:
        self.orch, self.links, self.pages, self.clock = orch, links, pages, clock
        self._form = read_form

    # -- the inbox ----------------------------------------------------------------------
    async def inbox_list(self, request: Request, visitor: Visitor) -> Response:
        q = request.query_params
        assignee = q.get("assignee", "").strip()
        run_id = q.get("run", "").strip()
        age = q.get("age", "").strip()
        errors: dict[str, str] = {}
        older_than = parse_age(age.lower()) if age else None
        if age and older_than is None:
            errors["age"] = f"Write an age like 90s, 30m, 4h or 2d, up to {MAX_AGE / 86400:.0f}d."
        inbox = self.orch.human_tasks
        stats = await inbox.stats()  # counts kept by the inbox scripts: nothing to load
        tasks = (
            []
            if errors
            else await inbox.list(
                assignee=assignee or None,
                run_id=run_id or None,
                older_than=older_than,
                limit=MAX_LIST,
            )
        )
        counts = stats.open_by_assignee
        return self.pages.render(
            visitor,
            "inbox.html",
            status=400 if errors else 200,
            tasks=tasks,
            total=stats.open,
            counts=sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])),
            filters={"assignee": assignee, "run": run_id, "age": age},
            filtered=bool(assignee or run_id or age),
            errors=errors,
        )

    async def item(self, request: Request, visitor: Visitor) -> Response:
        task = await self.orch.human_tasks.get(task_id_of(request))
        if visitor.link is not None and task.status != "open":
            raise LinkRefusedError(
                f"this item is {task.status}; the link has nothing left to decide",
                status=410,
            )
        return await self._item_page(visitor, task)

    async def _item_page(
        self,
        visitor: Visitor,
        task: HumanTask,
        *,
        status: int = 200,
        edit_text: str | None = None,
        edit_errors: list[str] | None = None,
        note: str = "",
        new_link: MagicLink | None = None,
    ) -> HTMLResponse:
        spec = edit_form(task)
        # The people of the team see (and may revoke) the links made for the item.
        links = await self.links.list(task.id) if visitor.link is None else []
        ctx = task.context if isinstance(task.context, dict) else {}
        known = {"goal", "output", "answer", "reason", "output_schema", "problems"}
        known |= {"last_plan", "outputs", "last_output", "why", "routed_to", "decisions_help"}
        known |= {"activity"} if isinstance(ctx.get("activity"), dict) else set()
        known |= {"activities"} if isinstance(ctx.get("activities"), dict) else set()
        known |= {k for k in ("verdicts", "history") if isinstance(ctx.get(k), list | dict)}
        extra = (
            {k: v for k, v in ctx.items() if k not in known}
            if isinstance(task.context, dict)
            else task.context
        )
        return self.pages.render(
            visitor,
            "item.html",
            status=status,
            task=task,
            ctx=ctx,
            activities=_activities(ctx),
            verdicts=_records(ctx.get("verdicts"), _VERDICT_FIELDS),
            history=_records(_attempts(ctx.get("history")), _ATTEMPT_FIELDS),
            extra=extra,
            sla=_sla(task, self.clock.now_ms()),
            spec=spec,
            edit_text=spec.initial() if spec and edit_text is None else edit_text,
            edit_errors=edit_errors or [],
            note=note,
            choices=[d for d in task.decisions if d != "edit"],
            link=visitor.link,
            links=links,
            new_link=new_link,
            ttls=LINK_TTLS,
        )

    async def decide(self, request: Request, visitor: Visitor) -> Response:
        form = await self._form(request, visitor)
        inbox = self.orch.human_tasks
        task = await inbox.get(task_id_of(request))
        decision, note = form.get("decision", ""), form.get("note", "").strip()
        if task.status != "open":
            raise Problem(409, "Already decided", f"{_closed(task)} Nothing was changed.")
        if decision not in task.decisions:
            raise Problem(
                400,
                "Not a decision of this item",
                f"{decision!r} is not one of this item's decisions "
                f"({', '.join(task.decisions)}). Nothing was recorded.",
            )
        if len(note) > MAX_NOTE:
            raise Problem(
                400, "The note is too long", f"Keep the note under {MAX_NOTE} characters."
            )
        data = None
        spec = edit_form(task)
        if decision == "edit" and spec is not None:
            raw = form.get(spec.field, "")
            value, errors = spec.parse(raw)
            if errors:
                return await self._item_page(
                    visitor, task, status=400, edit_text=raw, edit_errors=errors, note=note
                )
            data = {spec.field: value}
        if visitor.link is not None:  # a second decision: _refusal answers 409
            await self.links.decide(visitor.link, task.id, decision, note=note, data=data)
            return self.pages.message(
                visitor,
                200,
                "Thank you",
                f"Your decision {decision!r} was recorded. The link is used up now.",
            )
        await inbox.decide(task.id, decision, by=visitor.by, note=note, data=data)
        return RedirectResponse(item_path(task.id), status_code=303)

    # -- magic links, made and revoked by the team ----------------------------------------
    async def make_link(self, request: Request, visitor: Visitor) -> Response:
        form = await self._form(request, visitor)
        task = await self.orch.human_tasks.get(task_id_of(request))
        reviewer = form.get("reviewer", "").strip()
        ttl = dict(LINK_TTLS).get(form.get("ttl", ""))
        if ttl is None or (reviewer and not NAME.match(reviewer)):
            raise Problem(400, "The link was not made", "Choose a lifetime and a short name.")
        if task.status != "open":
            raise Problem(409, "Already decided", f"{_closed(task)} A link could decide nothing.")
        link = await self.links.create(task.id, ttl=ttl, reviewer=reviewer or None)
        return await self._item_page(visitor, task, status=201, new_link=link)

    async def revoke_link(self, request: Request, visitor: Visitor) -> Response:
        await self._form(request, visitor)
        task_id, link_id = task_id_of(request), request.path_params["link_id"]
        if link_id not in {x.id for x in await self.links.list(task_id)}:
            raise Problem(404, "Not found", f"Item {task_id} has no link {link_id!r}.")
        await self.links.revoke(link_id)
        return RedirectResponse(item_path(task_id), status_code=303)


def _sla(task: HumanTask, now_ms: int) -> str:
    if not task.sla_due_ms:
        return "no SLA"
    if task.status != "open":
        return f"closed ({task.status})"  # not overdue forever once decided
    left = task.sla_due_ms - now_ms
    at = when(task.sla_due_ms)
    return f"due in {span(left)} ({at})" if left >= 0 else f"overdue by {span(left)} ({at})"


_ATTEMPT_FIELDS = ("attempt", "status", "feedback", "output")


def _activities(ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """The activity specs an item is about: one (``activity``) or several (a
    cross-check's ``activities``, by id)."""
    if isinstance(ctx.get("activity"), dict):
        return [_readable(ctx["activity"])]
    many = ctx.get("activities")
    if not isinstance(many, dict):
        return []
    return [_readable(a) for a in many.values() if isinstance(a, dict)]


def _readable(spec: dict[str, Any]) -> dict[str, Any]:
    """An activity spec as a person reads it: the checks it gets in one line, not the
    verify spec's JSON with every switch; options left at "off" not shown."""
    shown = {k: v for k, v in spec.items() if v is not False}
    verify = spec.get("verify")
    if isinstance(verify, dict):
        shown["verify"] = verify_summary(verify)
    if isinstance(spec.get("facts"), list) and all(isinstance(f, str) for f in spec["facts"]):
        shown["facts"] = ", ".join(spec["facts"])
    return shown


def verify_summary(verify: dict[str, Any]) -> str:
    """``{"schema": true, "pii": "block", "max_retries": 2, ...}`` as
    ``schema, truncation, ...; pii: block; up to 2 retries``."""
    on = [k for k, v in verify.items() if v is True]
    options = [
        f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in verify.items()
        if k not in ("max_retries", "fallback_model") and v not in (None, True, False, [], {})
    ]
    retries = verify.get("max_retries")
    tail = [f"up to {retries} retries"] if isinstance(retries, int) else []
    if verify.get("fallback_model"):
        tail.append(f"then {verify['fallback_model']}")
    return "; ".join(x for x in (", ".join(on), *options, *tail) if x) or "no checks"


def _attempts(history: Any) -> Any:
    """An item's attempt history as one list; a cross-check's (activity id -> attempts)
    labels each attempt with its activity."""
    if not isinstance(history, dict):
        return history
    return [
        {**h, "attempt": f"{act} #{h.get('attempt', n + 1)}"}
        for act, attempts in history.items()
        if isinstance(attempts, list)
        for n, h in enumerate(attempts)
        if isinstance(h, dict)
    ]


_VERDICT_FIELDS = ("verifier", "status", "score", "reasons", "feedback", "evidence", "activities")


def _records(items: Any, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of a table from a context's list of objects, every field present."""
    if not isinstance(items, list):
        return []
    return [{f: item.get(f) for f in fields} for item in items if isinstance(item, dict)]


def _closed(task: HumanTask) -> str:
    d = task.decision or {}
    if task.status == "decided" and d:
        return (
            f"This item was already decided: {d.get('decision')!r} by {d.get('by')} "
            f"at {when(d.get('decided_ms'))}."
        )
    return f"This item is {task.status}; it takes no more decisions."
