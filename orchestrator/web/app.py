"""The web inbox as a Starlette app: server-rendered pages that work without JavaScript.

::

    app = create_app(orch, secret=load_secret(orch.settings), inbox_token="...")
    # uvicorn.run(app, host="127.0.0.1", port=8765), or `taskloom serve`

Who gets in:

* **People of the team** sign in at ``/signin`` with their name and the operator's
  inbox token (TASKLOOM_INBOX_TOKEN). The session is a signed cookie (HMAC-SHA256 with
  the secret; HttpOnly, SameSite=Lax, Secure when the public URL is https) holding the
            case SigninThrottledError(retry_after=wait):
                page = self._message(None, 429, "Too many attempts", f"{exc}.")
                page.headers["Retry-After"] = str(wait)
                return page
            case LinkRefusedError(status=status, title=title):
                return self._message(None, status, title, str(exc))
  page with ``?link=TOKEN``. With a link token a request reaches that item's page and
  its decision form and nothing else (403 anywhere else; 410 once used or expired).
* ``/metrics`` answers a signed-in session, or ``Authorization: Bearer <token>`` for a
  Prometheus scraper: TASKLOOM_METRICS_TOKEN, or the inbox token while that is unset.
  Wrong bearers count against the same throttle as sign-ins.

Every POST form carries a CSRF token in a hidden field (the session's, or one bound to
the link); a missing or wrong one is refused with 403 and nothing is recorded. A refused
request never sets or replaces the session cookie. Pages
are sent with a Content-Security-Policy that allows no script at all, and Jinja
autoescapes everything a model or a person wrote.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from taskloom.client import Orchestrator
from taskloom.display import MAX_AGE, parse_age, pretty, span, when
from taskloom.engine.clock import Clock
from taskloom.engine.human import HumanTask
from taskloom.engine.keys import STATUSES, TERMINAL_STATUSES
from taskloom.engine.metrics import Metrics
from taskloom.errors import (
    HumanTaskClosedError,
    HumanTaskNotFoundError,
    RunNotFoundError,
    TaskloomError,
    UserError,
)
from taskloom.inbox.links import LinkRefusedError, MagicLink, MagicLinks, item_path
from taskloom.inbox.signing import Signer
from taskloom.pipeline.pipeline import pipeline_entry
from taskloom.web.credentials import check_token
from taskloom.web.forms import FormError, edit_form, parse_form
from taskloom.web.hardening import SECURITY_HEADERS as _HEADERS
from taskloom.web.hardening import harden
from taskloom.web.sessions import SESSION_COOKIE, Sessions
from taskloom.web.sessions import Session as _Session
from taskloom.web.throttle import SigninLimits, SigninThrottle, SigninThrottledError
from taskloom.web.timeline import activity_rows, event_row, latest_plan

__all__ = ["SESSION_COOKIE", "create_app"]

log = logging.getLogger("taskloom.web")
MAX_BODY = 1024 * 1024
MAX_NOTE = 10_000
MAX_LIST = 1000
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
_LABELS = {
    "approve": "Approve",
    "reject": "Reject",
    "retry": "Retry with the note",
    "replan": "Re-plan with the note",
}

_LINK_TTLS = (("86400", 86400.0), ("259200", 259200.0), ("604800", 604800.0))
"""Lifetimes offered for a magic link made on an item's page: 1, 3 and 7 days."""

Access = Literal["public", "user", "item", "metrics"]


def create_app(
    orch: Orchestrator,
    *,
    secret: str,
    inbox_token: str,
    public_url: str | None = None,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    session_ttl: float = 12 * 3600,
    max_body: int = MAX_BODY,
    metrics_token: str | None = None,
    signin_limits: SigninLimits | None = None,
    trusted_hosts: Sequence[str] | None = None,
) -> Starlette:
    """The web inbox over ``orch`` (connected). ``secret`` signs sessions and links
    (:func:`~taskloom.web.load_secret`); ``inbox_token`` is what people sign in
    with; ``public_url`` (default ``orch.settings.public_url``) is where links point and
    whether cookies are Secure; ``clock`` is read for sessions, links and ages;
    ``metrics`` is served on ``/metrics`` (a fresh :class:`Metrics` if not given), to a
    session or a scraper sending ``metrics_token`` (default ``orch.settings``'s, else
    ``inbox_token``) as bearer; ``signin_limits`` (default from ``orch.settings``)
    throttle wrong tokens. Both tokens must be strong (:func:`.credentials.check_token`).
    ``trusted_hosts`` (default ``orch.settings.trusted_hosts``, else the public URL's
    host and loopback) are the ``Host`` names answered, any other gets 400
    (:func:`~taskloom.web.hardening.harden`)."""
    public_url = public_url or orch.settings.public_url
    inbox = _Inbox(
        orch,
        secret=secret,
        inbox_token=inbox_token,
        public_url=public_url,
        clock=clock or Clock(),
        metrics=metrics or Metrics(),
        session_ttl=session_ttl,
        max_body=max_body,
        metrics_token=metrics_token or orch.settings.metrics_token,
        signin_limits=signin_limits or SigninLimits.from_settings(orch.settings),
    )
    hosts = orch.settings.trusted_hosts if trusted_hosts is None else trusted_hosts
    return harden(inbox.app, public_url=public_url, trusted_hosts=hosts)


@dataclass(frozen=True)
class _Visitor:
    session: _Session
    link: MagicLink | None = None
    link_csrf: str = ""

    @property
    def csrf(self) -> str:
        return self.link_csrf if self.link else self.session.csrf

    @property
    def by(self) -> str:
        return self.link.by if self.link else self.session.user or ""


class _Problem(Exception):
    """Answer with a message page: ``status``, a title and what to do."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


Handler = Callable[[Request, _Visitor], Awaitable[Response]]


class _Inbox:
    def __init__(
        self,
        orch: Orchestrator,
        *,
        secret: str,
        inbox_token: str,
        public_url: str,
        clock: Clock,
        metrics: Metrics,
        session_ttl: float,
        max_body: int,
        metrics_token: str | None,
        signin_limits: SigninLimits,
    ) -> None:
        self.orch, self.clock, self.metrics = orch, clock, metrics
        check_token(inbox_token, name="TASKLOOM_INBOX_TOKEN", secret=secret)
        if metrics_token is not None:
            check_token(metrics_token, name="TASKLOOM_METRICS_TOKEN", secret=secret)
        self.inbox_token = inbox_token.encode()
        self.metrics_token = (metrics_token or inbox_token).encode()
        self.signer = Signer(secret)
        self.links = MagicLinks(orch.store, secret=secret, public_url=public_url, clock=clock)
        self.session_ttl, self.max_body = session_ttl, max_body
        self.secure = public_url.startswith("https://")
        self.sessions = Sessions(
            orch.store,
            signer=self.signer,
            inbox_token=inbox_token,
            ttl=session_ttl,
            clock=clock,
            secure=self.secure,
        )
        self.throttle = SigninThrottle(orch.store, limits=signin_limits, clock=clock)
        self.env = Environment(
            loader=PackageLoader("taskloom.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # the templates ship with the package: no stat per render
        )
        self.env.filters.update(when=when, pretty=pretty, span=span)
        self.env.globals.update(item_url=item_path, run_url=_run_url, label=_label)
        item = "/items/{run_id}/{seq}"
        routes = [
            Route("/signin", self._page(self.signin_form, "public"), methods=["GET"]),
            Route("/signin", self._page(self.signin, "public"), methods=["POST"]),
            Route("/signout", self._page(self.signout, "user"), methods=["POST"]),
            Route("/", self._page(self.inbox_list, "user"), methods=["GET"]),
            Route("/runs", self._page(self.runs, "user"), methods=["GET"]),
            Route("/runs/{run_id}", self._page(self.run, "user"), methods=["GET"]),
            Route(item, self._page(self.item, "item"), methods=["GET"]),
            Route(item + "/decide", self._page(self.decide, "item"), methods=["POST"]),
            Route(item + "/links", self._page(self.make_link, "user"), methods=["POST"]),
            Route(
                item + "/links/{link_id}/revoke",
                self._page(self.revoke_link, "user"),
                methods=["POST"],
            ),
            Route("/metrics", self._page(self.metrics_page, "metrics"), methods=["GET"]),
        ]
        self.app = Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_error},
        )

    # -- plumbing -----------------------------------------------------------------------
    def _page(self, handler: Handler, access: Access) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = await self.sessions.load(request.cookies.get(SESSION_COOKIE))
            token = request.query_params.get("link")
            try:
                visitor = await self._admit(request, session, token, access)
                if visitor is None:
                    response = self._to_signin(request, session, access)
                else:
                    response = await handler(request, visitor)
            except (TaskloomError, FormError, _Problem) as exc:
                signed_in = token is None and session.user is not None
                response = self._refusal(exc, _Visitor(session) if signed_in else None)
            # A link visit or a scrape with the bearer token gets no session cookie, nor
            # does a refused request (a cross-site POST came without the cookie: setting a
            # new one would sign the person out).
            cookie = token is None and access != "metrics"
            cookie = cookie and self.sessions.may_set_cookie(
                session, method=request.method, status=response.status_code
            )
            return self._finish(response, session, cookie=cookie)

        return endpoint

    def _refusal(self, exc: Exception, visitor: _Visitor | None) -> HTMLResponse:
        """The page that says why a request was refused, with its status."""
        match exc:
            case SigninThrottledError(retry_after=wait):
                page = self._message(None, 429, "Too many attempts", f"{exc}.")
                page.headers["Retry-After"] = str(wait)
                return page
            case LinkRefusedError(status=status, title=title):
                return self._message(None, status, title, str(exc))
            case FormError(status=status):
                return self._message(None, status, "The form was refused", str(exc))
            case _Problem(status=status, title=title, message=message):
                return self._message(visitor, status, title, message)
            case HumanTaskNotFoundError() | RunNotFoundError():
                return self._message(visitor, 404, "Not found", str(exc))
            case HumanTaskClosedError():
                return self._message(
                    visitor, 409, "Already decided", f"{exc}. Nothing was changed."
                )
            case UserError():
                return self._message(visitor, 400, "That cannot be done", str(exc))
        raise exc

    async def _admit(
        self, request: Request, session: _Session, token: str | None, access: Access
    ) -> _Visitor | None:
        if token is not None:
            if access != "item":
                raise LinkRefusedError(
                    "a magic link opens its own item's page and nothing else: not the "
                    "list, other items, runs or metrics",
                    status=403,
                )
            link = await self.links.check(token, _task_id(request))
            return _Visitor(session, link, self.links.csrf(link))
        if access == "public" or session.user:
            return _Visitor(session)
        if access == "metrics" and await self._bearer_ok(request):
            return _Visitor(session)
        return None

    async def _bearer_ok(self, request: Request) -> bool:
        """Whether the request carries the metrics bearer token; a wrong one counts
        against the sign-in throttle (it would be another way to guess a token)."""
        header = request.headers.get("authorization")
        if header is None:
            return False
        client = request.client.host if request.client else None
        attempt = await self.throttle.take(client)
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self.metrics_token
        ):
            await self.throttle.refund(attempt)
            return True
        log.warning(
            "/metrics refused: wrong bearer token from %s (%d in this window)",
            attempt.client,
            attempt.count,
        )
        return False

    def _to_signin(self, request: Request, session: _Session, access: Access) -> Response:
        if access == "metrics":
            return PlainTextResponse(
                "sign in, or send Authorization: Bearer <TASKLOOM_INBOX_TOKEN>\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="taskloom"'},
            )
        if request.method != "GET":
            return self._message(
                None, 401, "Sign in first", "Your session has ended: sign in and try again."
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)

    def _finish(self, response: Response, session: _Session, *, cookie: bool) -> Response:
        if session.fresh and cookie:
            self.sessions.set_cookie(response, session)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def _form(self, request: Request, visitor: _Visitor) -> dict[str, str]:
        """The POSTed form, bounded in size, with its CSRF token checked."""
        length = request.headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > self.max_body):
            raise FormError(413, f"the form is larger than {self.max_body} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise FormError(413, f"the form is larger than {self.max_body} bytes")
        form = parse_form(request.headers.get("content-type", ""), bytes(body))
        sent = form.get("csrf", "")
        if not sent or not hmac.compare_digest(sent.encode(), visitor.csrf.encode()):
            raise _Problem(
                403,
                "The form was refused",
                "The form's security token is missing or wrong (the page may be old: "
                "reload it and try again). Nothing was recorded.",
            )
        return form

    def _render(
        self, visitor: _Visitor | None, template: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        link_mode = visitor is None or visitor.link is not None
        base = {
            "nav": not link_mode,
            "user": None if link_mode or visitor is None else visitor.session.user,
            "csrf": visitor.csrf if visitor else "",
            "link_token": visitor.link.token if visitor and visitor.link else None,
            "now_ms": self.clock.now_ms(),
            "refresh": None,
        }
        html = self.env.get_template(template).render(**(base | context))
        return HTMLResponse(html, status_code=status)

    def _message(
        self, visitor: _Visitor | None, status: int, title: str, message: str
    ) -> HTMLResponse:
        return self._render(visitor, "message.html", status=status, title=title, message=message)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        text = {404: "There is no page here.", 405: "This page does not take that method."}
        response = self._message(None, status, f"Error {status}", text.get(status, str(exc)))
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # -- signing in and out -------------------------------------------------------------
    async def signin_form(self, request: Request, visitor: _Visitor) -> Response:
        next_url = _local(request.query_params.get("next", "/"))
        return self._render(visitor, "signin.html", next=next_url, name="", error=None)

    async def signin(self, request: Request, visitor: _Visitor) -> Response:
        form = await self._form(request, visitor)
        name, token = form.get("name", "").strip(), form.get("token", "")
        next_url = _local(form.get("next", "/"))
        client = request.client.host if request.client else None
        attempt = await self.throttle.take(client)  # 429 past the limit, even if right
        if not hmac.compare_digest(token.encode(), self.inbox_token):
            # The address and the name given, never the guessed token.
            log.warning(
                "sign-in refused: wrong inbox token from %s (name %r; %d in this window)",
                attempt.client,
                name[:64],
                attempt.count,
            )
            error, status = "That is not the inbox's sign-in token.", 401
        elif not _NAME.match(name):
            await self.throttle.refund(attempt)
            error, status = "Give your name (up to 64 characters): decisions record it.", 400
        else:
            await self.throttle.refund(attempt)
            await self.sessions.sign_in(visitor.session, name)
            return RedirectResponse(next_url, status_code=303)
        return self._render(
            visitor, "signin.html", status=status, next=next_url, name=name, error=error
        )

    async def signout(self, request: Request, visitor: _Visitor) -> Response:
        await self._form(request, visitor)
        await self.sessions.sign_out(visitor.session)
        return RedirectResponse("/signin", status_code=303)

    # -- the inbox ----------------------------------------------------------------------
    async def inbox_list(self, request: Request, visitor: _Visitor) -> Response:
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
        return self._render(
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

    async def item(self, request: Request, visitor: _Visitor) -> Response:
        task = await self.orch.human_tasks.get(_task_id(request))
        if visitor.link is not None and task.status != "open":
            raise LinkRefusedError(
                f"this item is {task.status}; the link has nothing left to decide",
                status=410,
            )
        return await self._item_page(visitor, task)

    async def _item_page(
        self,
        visitor: _Visitor,
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
        known |= {"last_plan", "outputs"}
        known |= {"activity"} if isinstance(ctx.get("activity"), dict) else set()
        known |= {k for k in ("verdicts", "history") if isinstance(ctx.get(k), list)}
        extra = (
            {k: v for k, v in ctx.items() if k not in known}
            if isinstance(task.context, dict)
            else task.context
        )
        return self._render(
            visitor,
            "item.html",
            status=status,
            task=task,
            ctx=ctx,
            activity=ctx.get("activity") if isinstance(ctx.get("activity"), dict) else None,
            verdicts=_records(ctx.get("verdicts"), _VERDICT_FIELDS),
            history=_records(ctx.get("history"), ("attempt", "status", "feedback", "output")),
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
            ttls=_LINK_TTLS,
        )

    async def decide(self, request: Request, visitor: _Visitor) -> Response:
        form = await self._form(request, visitor)
        inbox = self.orch.human_tasks
        task = await inbox.get(_task_id(request))
        decision, note = form.get("decision", ""), form.get("note", "").strip()
        if task.status != "open":
            raise _Problem(409, "Already decided", f"{_closed(task)} Nothing was changed.")
        if decision not in task.decisions:
            raise _Problem(
                400,
                "Not a decision of this item",
                f"{decision!r} is not one of this item's decisions "
                f"({', '.join(task.decisions)}). Nothing was recorded.",
            )
        if len(note) > MAX_NOTE:
            raise _Problem(
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
            return self._message(
                visitor,
                200,
                "Thank you",
                f"Your decision {decision!r} was recorded. The link is used up now.",
            )
        await inbox.decide(task.id, decision, by=visitor.by, note=note, data=data)
        return RedirectResponse(item_path(task.id), status_code=303)

    # -- magic links, made and revoked by the team ----------------------------------------
    async def make_link(self, request: Request, visitor: _Visitor) -> Response:
        form = await self._form(request, visitor)
        task = await self.orch.human_tasks.get(_task_id(request))
        reviewer = form.get("reviewer", "").strip()
        ttl = dict(_LINK_TTLS).get(form.get("ttl", ""))
        if ttl is None or (reviewer and not _NAME.match(reviewer)):
            raise _Problem(400, "The link was not made", "Choose a lifetime and a short name.")
        if task.status != "open":
            raise _Problem(409, "Already decided", f"{_closed(task)} A link could decide nothing.")
        link = await self.links.create(task.id, ttl=ttl, reviewer=reviewer or None)
        return await self._item_page(visitor, task, status=201, new_link=link)

    async def revoke_link(self, request: Request, visitor: _Visitor) -> Response:
        await self._form(request, visitor)
        task_id, link_id = _task_id(request), request.path_params["link_id"]
        if link_id not in {x.id for x in await self.links.list(task_id)}:
            raise _Problem(404, "Not found", f"Item {task_id} has no link {link_id!r}.")
        await self.links.revoke(link_id)
        return RedirectResponse(item_path(task_id), status_code=303)

    # -- runs ---------------------------------------------------------------------------
    async def runs(self, request: Request, visitor: _Visitor) -> Response:
        status = request.query_params.get("status", "")
        if status and status not in STATUSES:
            raise _Problem(400, "Unknown status", f"Choose one of {', '.join(STATUSES)}.")
        runs = await self.orch.list_runs(status or None, limit=200)
        return self._render(visitor, "runs.html", runs=runs, current=status, statuses=STATUSES)

    async def run(self, request: Request, visitor: _Visitor) -> Response:
        run_id = request.path_params["run_id"]
        handle = self.orch.handle(run_id)
        info = await handle.info()
        events = [e async for e in handle.events(follow=False)]  # the log, read once
        decisions = [d for e in events if (d := pipeline_entry(e)) is not None]
        budget = await self.orch.budget(run_id)
        open_tasks = await self.orch.human_tasks.list(run_id=run_id, limit=MAX_LIST)
        return self._render(
            visitor,
            "run.html",
            info=info,
            rows=[event_row(e) for e in events],
            plan=latest_plan(decisions),
            activities=activity_rows(decisions),
            budget=budget,
            open_tasks=open_tasks,
            refresh=None if info.status in TERMINAL_STATUSES else 5,
        )

    # -- metrics ------------------------------------------------------------------------
    async def metrics_page(self, request: Request, visitor: _Visitor) -> Response:
        inbox = self.orch.human_tasks  # cluster-wide numbers, read fresh for each scrape
        self.metrics.set_inbox(await inbox.stats())
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.metrics.registry), media_type=content_type)


# -- helpers ----------------------------------------------------------------------------
def _task_id(request: Request) -> str:
    return f"{request.path_params['run_id']}/{request.path_params['seq']}"


def _run_url(run_id: str) -> str:
    return f"/runs/{quote(run_id, safe='')}"


def _label(decision: str) -> str:
    return _LABELS.get(decision, decision.replace("_", " ").capitalize())


def _local(url: str) -> str:
    """``url`` if it is a path on this site, else ``/`` (no open redirects)."""
    if url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/"


def _sla(task: HumanTask, now_ms: int) -> str:
    if not task.sla_due_ms:
        return "no SLA"
    if task.status != "open":
        return f"closed ({task.status})"  # not overdue forever once decided
    left = task.sla_due_ms - now_ms
    at = when(task.sla_due_ms)
    return f"due in {span(left)} ({at})" if left >= 0 else f"overdue by {span(left)} ({at})"


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
