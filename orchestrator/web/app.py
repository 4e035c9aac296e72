"""The web inbox and run pages as a Starlette app: server-rendered pages that work
without JavaScript.

::

    app = create_app(orch, secret=load_secret(orch.settings), inbox_token="...")
    # uvicorn.run(app, host="127.0.0.1", port=8765), or `taskloom serve`

Who gets in:

* **People of the team** sign in at ``/signin`` with their name and the operator's
  inbox token (TASKLOOM_INBOX_TOKEN). The session is a signed cookie (HMAC-SHA256 with
  the secret; HttpOnly, SameSite=Lax, Secure when the public URL is https) holding the
  name, an expiry and the session's CSRF token.
* **Outside reviewers** open a magic link (:mod:`taskloom.inbox.links`): the item's
  page with ``?link=TOKEN``. With a link token a request reaches that item's page and
  its decision form and nothing else (403 anywhere else; 410 once used or expired).
* ``/metrics`` answers a signed-in session, or ``Authorization: Bearer <token>`` for a
  Prometheus scraper: TASKLOOM_METRICS_TOKEN, or the inbox token while that is unset.
  Wrong bearers count against the same throttle as sign-ins.

Every POST form carries a CSRF token in a hidden field (the session's, or one bound to
the link); a missing or wrong one is refused with 403 and nothing is recorded. A refused
request never sets or replaces the session cookie. Pages
are sent with a Content-Security-Policy that allows no script at all, but for a live run
page, which loads the site's own ``/static/run.js`` (:data:`~taskloom.web.hardening.RUN_PAGE_CSP`),
and Jinja autoescapes everything a model or a person wrote.

The pages of runs (the list, a run's page and its live stream, the start, cancel and
re-run forms) are :class:`~taskloom.web.runs.RunPages`; those of the inbox's items are
:class:`~taskloom.web.items.ItemPages`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files
from urllib.parse import quote

from prometheus_client.exposition import choose_encoder
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from taskloom.client import Orchestrator
from taskloom.engine.clock import Clock
from taskloom.engine.metrics import Metrics
from taskloom.errors import (
    HumanTaskClosedError,
    HumanTaskNotFoundError,
    RedisRefusedError,
    RedisUnavailableError,
    RunNotFoundError,
    TaskloomError,
    UserError,
)
from taskloom.inbox.links import LinkRefusedError, MagicLinks
from taskloom.inbox.signing import Signer
from taskloom.redaction import redact_text
from taskloom.web.credentials import check_token
from taskloom.web.forms import FormError, parse_form
from taskloom.web.hardening import SECURITY_HEADERS as _HEADERS
from taskloom.web.hardening import harden
from taskloom.web.items import ItemPages
from taskloom.web.rendering import Renderer
from taskloom.web.runs import RunPages
from taskloom.web.sessions import SESSION_COOKIE, Sessions
from taskloom.web.sessions import Session as _Session
from taskloom.web.throttle import SigninLimits, SigninThrottle, SigninThrottledError
from taskloom.web.visitors import NAME, Access, Handler, Problem, Visitor, task_id_of

__all__ = ["SESSION_COOKIE", "STORE_DOWN_RETRY_S", "create_app"]

log = logging.getLogger("taskloom.web")

STORE_DOWN_RETRY_S = 5
"""The ``Retry-After`` (seconds) of the page served while Redis is out of reach."""
MAX_BODY = 1024 * 1024


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
        self.pages = Renderer(clock)
        self.items = ItemPages(
            orch, links=self.links, pages=self.pages, clock=clock, read_form=self._form
        )
        self.runs = RunPages(orch, pages=self.pages, clock=clock, read_form=self._form)
        item, run = "/items/{run_id}/{seq}", "/runs/{run_id}"
        routes = [
            Route("/signin", self._page(self.signin_form, "public"), methods=["GET"]),
            Route("/signin", self._page(self.signin, "public"), methods=["POST"]),
            Route("/signout", self._page(self.signout, "user"), methods=["POST"]),
            Route("/", self._page(self.items.inbox_list, "user"), methods=["GET"]),
            Route("/runs", self._page(self.runs.runs, "user"), methods=["GET"]),
            Route("/runs", self._page(self.runs.start, "user"), methods=["POST"]),
            Route("/runs/new", self._page(self.runs.new_run, "user"), methods=["GET"]),
            Route(run, self._page(self.runs.run, "user"), methods=["GET"]),
            Route(run + "/live", self._page(self.runs.live, "user"), methods=["GET"]),
            Route(run + "/cancel", self._page(self.runs.cancel, "user"), methods=["POST"]),
            Route(run + "/rerun", self._page(self.runs.rerun, "user"), methods=["POST"]),
            Route("/static/run.js", self._page(_script, "public"), methods=["GET"]),
            Route(item, self._page(self.items.item, "item"), methods=["GET"]),
            Route(item + "/decide", self._page(self.items.decide, "item"), methods=["POST"]),
            Route(item + "/links", self._page(self.items.make_link, "user"), methods=["POST"]),
            Route(
                item + "/links/{link_id}/revoke",
                self._page(self.items.revoke_link, "user"),
                methods=["POST"],
            ),
            Route("/metrics", self._page(self.metrics_page, "metrics"), methods=["GET"]),
        ]
        self.app = Starlette(
            routes=routes,
            exception_handlers={
                HTTPException: self._http_error,
                # Whatever a page was doing when Redis went out of reach or refused.
                RedisError: self._store_down,
                RedisUnavailableError: self._store_down,
                RedisRefusedError: self._store_down,
            },
        )

    # -- plumbing -----------------------------------------------------------------------
    async def _store_down(self, request: Request, exc: Exception) -> Response:
        """Redis out of reach (after the client's own retries) or refusing: a 503 page
        that says so, and one log line, instead of a bare 500 and a traceback per
        request."""
        log.warning(
            "web: %s %s: Redis out of reach: %s",
            request.method,
            request.url.path,
            redact_text(str(exc)),
        )
        response = self.pages.message(
            None,
            503,
            "Try again in a moment",
            "taskloom cannot reach its state store (Redis) just now, so this page can be "
            "neither read nor changed. Nothing was recorded. Reload in a few seconds.",
        )
        response.headers["Retry-After"] = str(STORE_DOWN_RETRY_S)
        return _secured(response)

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
            except (TaskloomError, FormError, Problem) as exc:
                signed_in = token is None and session.user is not None
                response = self._refusal(exc, Visitor(session) if signed_in else None)
            # A link visit or a scrape with the bearer token gets no session cookie, nor
            # does a refused request (a cross-site POST came without the cookie: setting a
            # new one would sign the person out).
            cookie = token is None and access != "metrics"
            cookie = cookie and self.sessions.may_set_cookie(
                session, method=request.method, status=response.status_code
            )
            return self._finish(response, session, cookie=cookie)

        return endpoint

    def _refusal(self, exc: Exception, visitor: Visitor | None) -> HTMLResponse:
        """The page that says why a request was refused, with its status."""
        match exc:
            case SigninThrottledError(retry_after=wait):
                page = self.pages.message(None, 429, "Too many attempts", f"{exc}.")
                page.headers["Retry-After"] = str(wait)
                return page
            case LinkRefusedError(status=status, title=title):
                return self.pages.message(None, status, title, str(exc))
            case FormError(status=status):
                return self.pages.message(None, status, "The form was refused", str(exc))
            case Problem(status=status, title=title, message=message):
                return self.pages.message(visitor, status, title, message)
            case HumanTaskNotFoundError() | RunNotFoundError():
                return self.pages.message(visitor, 404, "Not found", str(exc))
            case HumanTaskClosedError():
                return self.pages.message(
                    visitor, 409, "Already decided", f"{exc}. Nothing was changed."
                )
            case UserError():
                return self.pages.message(visitor, 400, "That cannot be done", str(exc))
        raise exc

    async def _admit(
        self, request: Request, session: _Session, token: str | None, access: Access
    ) -> Visitor | None:
        if token is not None:
            if access != "item":
                raise LinkRefusedError(
                    "a magic link opens its own item's page and nothing else: not the "
                    "list, other items, runs or metrics",
                    status=403,
                )
            link = await self.links.check(token, task_id_of(request))
            return Visitor(session, link, self.links.csrf(link))
        if access == "public" or session.user:
            return Visitor(session)
        if access == "metrics" and await self._bearer_ok(request):
            return Visitor(session)
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
            return self.pages.message(
                None, 401, "Sign in first", "Your session has ended: sign in and try again."
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)

    def _finish(self, response: Response, session: _Session, *, cookie: bool) -> Response:
        if session.fresh and cookie:
            self.sessions.set_cookie(response, session)
        return _secured(response)

    async def _form(self, request: Request, visitor: Visitor) -> dict[str, str]:
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
            raise Problem(
                403,
                "The form was refused",
                "The form's security token is missing or wrong (the page may be old: "
                "reload it and try again). Nothing was recorded.",
            )
        return form

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        text = {404: "There is no page here.", 405: "This page does not take that method."}
        response = self.pages.message(None, status, f"Error {status}", text.get(status, str(exc)))
        return _secured(response)

    # -- signing in and out -------------------------------------------------------------
    async def signin_form(self, request: Request, visitor: Visitor) -> Response:
        next_url = _local(request.query_params.get("next", "/"))
        return self.pages.render(visitor, "signin.html", next=next_url, name="", error=None)

    async def signin(self, request: Request, visitor: Visitor) -> Response:
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
        elif not NAME.match(name):
            await self.throttle.refund(attempt)
            error, status = "Give your name (up to 64 characters): decisions record it.", 400
        else:
            await self.throttle.refund(attempt)
            await self.sessions.sign_in(visitor.session, name)
            return RedirectResponse(next_url, status_code=303)
        return self.pages.render(
            visitor, "signin.html", status=status, next=next_url, name=name, error=error
        )

    async def signout(self, request: Request, visitor: Visitor) -> Response:
        await self._form(request, visitor)
        await self.sessions.sign_out(visitor.session)
        return RedirectResponse("/signin", status_code=303)

    # -- metrics ------------------------------------------------------------------------
    async def metrics_page(self, request: Request, visitor: Visitor) -> Response:
        inbox = self.orch.human_tasks  # cluster-wide numbers, read fresh for each scrape
        self.metrics.set_inbox(await inbox.stats())
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.metrics.registry), media_type=content_type)


# -- helpers ----------------------------------------------------------------------------
_RUN_JS = (files("taskloom.web") / "static" / "run.js").read_bytes()


async def _script(request: Request, visitor: Visitor) -> Response:
    """The run page's script (the site's only one)."""
    return Response(_RUN_JS, media_type="text/javascript")


def _local(url: str) -> str:
    """``url`` if it is a path on this site, else ``/`` (no open redirects)."""
    if url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/"


def _secured(response: Response) -> Response:
    """``response`` with the security headers (those it set itself win)."""
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    return response
