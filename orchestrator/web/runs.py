"""The web's run pages: the runs list (search, status, paging), a run's page (its plan
as a graph, its timeline, its answer, its log), that page kept live over server-sent
events, and the forms that start, cancel and re-run runs.

Everything is server-rendered and reads without JavaScript (the run page then reloads
itself every few seconds while the run is active). With JavaScript, the page's one
script (``/static/run.js``) follows ``/runs/{id}/live`` and puts each newly rendered
part of the page in place: the same templates draw it on both paths.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from taskloom.agents.budget import BudgetUsage
from taskloom.agents.providers import split_model
from taskloom.client import MAX_GOAL_CHARS, Orchestrator
from taskloom.engine import serde
from taskloom.engine.clock import Clock
from taskloom.engine.human import HumanTask
from taskloom.engine.keys import STATUSES, TERMINAL_STATUSES
from taskloom.engine.payloads import Payloads
from taskloom.engine.store import Event, RunInfo
from taskloom.errors import TaskloomError
from taskloom.pipeline.entries import PIPELINE_NAME
from taskloom.pipeline.livetokens import LiveText, LiveTokens
from taskloom.pipeline.progress import PlanVersion, RunProgress
from taskloom.pipeline.templates import template_names
from taskloom.web.drawing import Gantt, Graph, gantt, plan_graph
from taskloom.web.hardening import RUN_PAGE_CSP
from taskloom.web.rendering import Renderer, run_path
from taskloom.web.runlist import RunAbout, describe, find_runs
from taskloom.web.timeline import event_row
from taskloom.web.visitors import Problem, Visitor

__all__ = ["LIVE_PARTS", "RunPages", "RunView"]

LIVE_PARTS = ("run-head", "run-items", "run-graph", "run-timeline", "run-answer", "run-activities")
"""The ids of the run page's parts that the live stream sends anew."""
STREAM_SECONDS = 300.0
"""How long one live stream lasts; the browser's EventSource then reconnects."""
REFRESH_SECONDS = 15.0
"""The longest a live page goes without a new rendering (it keeps the stream open
through proxies, and moves running times on)."""
MAX_OPEN_ITEMS = 100
LIVE_TAIL = 2000
"""The most characters of a running activity's live text the page shows (the latest)."""
TOKENS_PAUSE = 0.2
"""Seconds between two ``tokens`` messages of a stream (pieces arriving meanwhile
go in the next)."""


@dataclass
class RunView:
    """What the run page shows of one run."""

    info: RunInfo
    progress: RunProgress
    about: RunAbout
    budget: BudgetUsage
    open_tasks: list[HumanTask]
    answer: Any
    version: PlanVersion | None
    """The plan version drawn (the latest unless the page asked for another)."""
    graph: Graph | None
    timeline: Gantt | None
    now_ms: int
    calls: dict[str, tuple[str, LiveText]]
    """Each activity whose model call is on, by the step it streams on: its id and its
    live text so far."""

    live_tail: ClassVar[int] = LIVE_TAIL

    @property
    def live(self) -> dict[str, str]:
        """The live text so far of each activity (by id) whose model call is on."""
        return {act_id: text.text for act_id, text in self.calls.values()}

    @property
    def active(self) -> bool:
        return self.info.status not in TERMINAL_STATUSES

    @property
    def pipeline(self) -> bool:
        """A run of the pipeline (a goal planned into activities), not of another workflow."""
        return self.info.workflow == PIPELINE_NAME

    @property
    def duration_ms(self) -> int:
        end = self.now_ms if self.active else self.info.updated_ms
        return max(end - self.info.created_ms, 0)


class RunPages:
    """The handlers of ``/runs...``; ``read_form`` reads a POSTed form and checks its
    CSRF token."""

    def __init__(
        self,
        orch: Orchestrator,
        *,
        pages: Renderer,
        clock: Clock,
        read_form: Callable[[Request, Visitor], Awaitable[dict[str, str]]],
    ) -> None:
        self.orch, self.pages, self.clock = orch, pages, clock
        self._form = read_form
        self.payloads: Payloads = orch.payloads()
        self.tokens = LiveTokens(orch.store, follower=orch.follower)

    # -- the list -----------------------------------------------------------------------
    async def runs(self, request: Request, visitor: Visitor) -> Response:
        q = request.query_params
        status, text, after = q.get("status", ""), q.get("q", "").strip(), q.get("after") or None
        if status and status not in STATUSES:
            raise Problem(400, "Unknown status", f"Choose one of {', '.join(STATUSES)}.")
        found = await find_runs(
            self.orch,
            self.payloads,
            statuses=[status] if status else STATUSES,
            text=text[:200],
            after=after,
        )
        keep = {k: v for k, v in (("status", status), ("q", text)) if v}
        return self.pages.render(
            visitor,
            "runs.html",
            found=found,
            current=status,
            text=text,
            paged=after is not None,
            statuses=STATUSES,
            first_url="/runs" + (f"?{urlencode(keep)}" if keep else ""),
            next_url=f"/runs?{urlencode(keep | {'after': found.next})}" if found.next else None,
        )

    # -- one run ------------------------------------------------------------------------
    async def run(self, request: Request, visitor: Visitor) -> Response:
        run_id = request.path_params["run_id"]
        wanted = _version(request)
        events = [e async for e in self.orch.handle(run_id).events(follow=False)]
        progress = RunProgress()
        for event in events:
            progress.feed(event)
        view = await self._view(run_id, progress, wanted)
        live = None
        if view.active:
            query = {"after": progress.last_id} | ({"version": str(wanted)} if wanted else {})
            live = f"{run_path(run_id)}/live?{urlencode(query)}"
        page = self.pages.render(
            visitor,
            "run.html",
            v=view,
            rows=[event_row(e) for e in events],
            refresh=5 if view.active else None,
            live_url=live,
            rerun_key=uuid.uuid4().hex,
        )
        if live is not None:
            page.headers["Content-Security-Policy"] = RUN_PAGE_CSP
        return page

    async def _view(self, run_id: str, progress: RunProgress, wanted: int | None) -> RunView:
        meta, budget, tasks = await asyncio.gather(
            self.orch.store.get_meta(run_id),
            self.orch.budget(run_id),
            self.orch.human_tasks.list(run_id=run_id, limit=MAX_OPEN_ITEMS),
        )
        info = RunInfo.from_meta(meta)
        recorded = serde.loads(meta.get("input") or "null")
        about = describe(info.workflow, await self.payloads.unpack(recorded))
        result = await self.payloads.unpack(info.result) if info.status == "completed" else None
        answer = result.get("answer", result) if isinstance(result, dict) else result
        version = _pick(progress, wanted)
        calls = await self._calls(run_id, version)
        now = self.clock.now_ms()
        end = progress.end_ms or max(now, _last_ms(progress))
        return RunView(
            info=info,
            progress=progress,
            about=about,
            budget=budget,
            open_tasks=tasks,
            answer=answer,
            version=version,
            graph=plan_graph(version, answer_state=_answer_state(info, progress, version))
            if version is not None
            else None,
            timeline=gantt(progress.rows(), start_ms=progress.start_ms, end_ms=end)
            if progress.versions
            else None,
            now_ms=now,
            calls=calls,
        )

    async def _calls(
        self, run_id: str, version: PlanVersion | None
    ) -> dict[str, tuple[str, LiveText]]:
        """Each activity of ``version`` whose model call is on, by the step it streams
        on: its id and the end of its text so far."""
        steps = {s.calling: s.id for s in version.steps.values() if s.calling} if version else {}
        texts = await asyncio.gather(
            *(self.tokens.latest(run_id, step, tail=LIVE_TAIL) for step in steps)
        )
        return {step: (act_id, t) for (step, act_id), t in zip(steps.items(), texts, strict=True)}

    # -- live ---------------------------------------------------------------------------
    async def live(self, request: Request, visitor: Visitor) -> Response:
        """Server-sent events: ``view`` (the page's parts, rendered anew) after each
        batch of new log events, ``end`` once the run has ended; 204 for an ended run
        (an EventSource stops asking)."""
        run_id = request.path_params["run_id"]
        wanted = _version(request)
        info = await self.orch.handle(run_id).info()
        if info.status in TERMINAL_STATUSES:
            return Response(status_code=204)
        seen = request.headers.get("last-event-id") or request.query_params.get("after", "")
        stream = self._stream(request, visitor, run_id, wanted, seen)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},  # proxies: pass each event on at once
        )

    async def _stream(
        self, request: Request, visitor: Visitor, run_id: str, wanted: int | None, seen: str
    ) -> AsyncIterator[str]:
        """Messages until the run ends, the client leaves or the stream's time is up:
        a ``view`` after each batch of log events, after a change of the run's status
        (which the log does not always record: a run taken up by a worker), and every
        :data:`REFRESH_SECONDS` anyway (running times and bars grow), each with the
        log's rows the page has not shown yet (those after ``seen``); and a ``tokens``
        message when a running activity's model streams more text (its latest
        :data:`LIVE_TAIL` characters)."""
        store, handle = self.orch.store, self.orch.handle(run_id)
        progress, unseen, count = RunProgress(), [], 0
        for event in await store.read_log(run_id):
            progress.feed(event)
            count += 1
            if seen and _entry_id(event.id) > _entry_id(seen):
                unseen.append(event)
        loop = asyncio.get_running_loop()
        stop, sent, status = loop.time() + STREAM_SECONDS, loop.time(), ""
        calls = await self._calls(run_id, _pick_quietly(progress, wanted))
        waits = _Waits()
        yield "retry: 2000\n\n"
        fresh = bool(unseen)  # written after the page was rendered
        try:
            while True:
                if fresh or loop.time() - sent > REFRESH_SECONDS:
                    message, view = await self._message(
                        visitor, run_id, progress, wanted, unseen, count
                    )
                    yield message
                    sent, unseen, status = loop.time(), [], view.info.status
                    calls = view.calls
                    if progress.ended:
                        yield "event: end\ndata: {}\n\n"
                        return
                    await asyncio.sleep(0.25)  # a burst of events: one message for it
                if loop.time() > stop or await request.is_disconnected():
                    return
                texts = {step: text for step, (_, text) in calls.items()}
                events, changed = await waits.next(
                    partial(self._next_events, run_id, progress.last_id),
                    partial(self.tokens.watch, run_id, texts, block_ms=1000) if texts else None,
                )
                for step in changed or ():
                    if step in calls:
                        yield _tokens(*calls[step])
                if changed:
                    await asyncio.sleep(TOKENS_PAUSE)
                for event in events or ():
                    progress.feed(event)
                unseen += events or []
                count += len(events or [])
                fresh = bool(events) or (
                    events is not None and (await handle.info()).status != status
                )
        finally:
            await waits.aclose()

    async def _next_events(self, run_id: str, after: str) -> list[Event]:
        """The run's log events after ``after``, waiting up to a second for the first:
        through the Orchestrator's follower, so a hundred open pages wait on a few
        connections, not one each."""
        key = self.orch.store.keys.log(run_id)
        entries = await self.orch.follower.read(key, after or "0-0", block_ms=1000)
        return [Event.parse(entry_id, fields) for entry_id, fields in entries]

    async def _message(
        self,
        visitor: Visitor,
        run_id: str,
        progress: RunProgress,
        wanted: int | None,
        unseen: list[Event],
        count: int,
    ) -> tuple[str, RunView]:
        """A ``view`` event, and the view it shows."""
        view = await self._view(run_id, progress, wanted)
        parts = self.pages.parts(
            visitor, "run_parts.html", LIVE_PARTS, v=view, rerun_key=uuid.uuid4().hex
        )
        rows = self.pages.macro(
            visitor, "run_parts.html", "log_rows", [event_row(e) for e in unseen]
        )
        data = {"status": view.info.status, "parts": parts, "log": rows, "log_count": count}
        text = json.dumps(data, separators=(",", ":"))
        return f"id: {progress.last_id}\nevent: view\ndata: {text}\n\n", view

    # -- starting, cancelling, re-running -------------------------------------------------
    async def new_run(self, request: Request, visitor: Visitor) -> Response:
        q = request.query_params
        fields = {"goal": q.get("goal", ""), "template": q.get("template", "")}
        fields |= {"budget": "", "model": self.orch.settings.model or ""}
        return self._start_form(visitor, fields, {})

    def _start_form(
        self, visitor: Visitor, fields: dict[str, str], errors: dict[str, str], status: int = 200
    ) -> Response:
        return self.pages.render(
            visitor,
            "new_run.html",
            status=status,
            fields=fields,
            errors=errors,
            templates=template_names(),
            key=fields.get("key") or uuid.uuid4().hex,
            max_goal=MAX_GOAL_CHARS,
        )

    async def start(self, request: Request, visitor: Visitor) -> Response:
        form = await self._form(request, visitor)
        fields = {
            k: form.get(k, "").strip() for k in ("goal", "template", "budget", "model", "key")
        }
        errors: dict[str, str] = {}
        if not fields["goal"]:
            errors["goal"] = "Say what you want done."
        elif len(fields["goal"]) > MAX_GOAL_CHARS:
            errors["goal"] = f"Keep the goal under {MAX_GOAL_CHARS} characters."
        if fields["template"] and fields["template"] not in template_names():
            errors["template"] = f"Choose one of {', '.join(template_names())}, or none."
        budget = _budget(fields["budget"], errors)
        model = fields["model"] or self.orch.settings.model
        if not model:
            errors["model"] = "Give a model (provider:model, e.g. openai:gpt-4.1-mini)."
        else:
            try:
                split_model(model)
            except TaskloomError as exc:
                errors["model"] = str(exc)
        if not _key(fields["key"]):
            errors["key"] = "The form is incomplete: reload it and try again."
        if errors:
            return self._start_form(visitor, fields, errors, status=400)
        handle = await self.orch.submit(
            fields["goal"],
            template=fields["template"] or None,
            budget_usd=budget,
            model=model,
            run_id=f"web-{fields['key']}",  # the same form sent twice starts one run
        )
        return RedirectResponse(run_path(handle.run_id), status_code=303)

    async def cancel(self, request: Request, visitor: Visitor) -> Response:
        await self._form(request, visitor)
        run_id = request.path_params["run_id"]
        await self.orch.handle(run_id).cancel()
        return RedirectResponse(run_path(run_id), status_code=303)

    async def rerun(self, request: Request, visitor: Visitor) -> Response:
        form = await self._form(request, visitor)
        run_id, activity, key = (
            request.path_params["run_id"],
            form.get("activity", ""),
            form.get("key", ""),
        )
        if not activity or not _key(key):
            raise Problem(400, "Nothing was started", "Choose the activity to re-run from.")
        handle = await self.orch.rerun(run_id, from_activity=activity, new_run_id=f"rerun-{key}")
        return RedirectResponse(run_path(handle.run_id), status_code=303)


# -- helpers ------------------------------------------------------------------------------
class _Waits:
    """Two waits at once for a live stream, each kept on until it answers: the log's
    next events, and more text of the running activities' model calls."""

    def __init__(self) -> None:
        self._log: asyncio.Future[list[Event]] | None = None
        self._tokens: asyncio.Future[list[str]] | None = None

    async def next(
        self,
        log: Callable[[], Awaitable[list[Event]]],
        tokens: Callable[[], Awaitable[list[str]]] | None,
    ) -> tuple[list[Event] | None, list[str] | None]:
        """The log's new events (``[]``: none came in time) and the steps with more
        text, either ``None`` when that wait goes on."""
        if self._log is None:
            self._log = asyncio.ensure_future(log())
        if self._tokens is None and tokens is not None:
            self._tokens = asyncio.ensure_future(tokens())
        waiting = {f for f in (self._log, self._tokens) if f is not None}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        events = changed = None
        if self._log in done:
            events, self._log = self._log.result(), None
        if self._tokens is not None and self._tokens in done:
            changed, self._tokens = self._tokens.result(), None
        return events, changed

    async def aclose(self) -> None:
        """Stop the waits still on (the client left, or the stream ended)."""
        waiting = [f for f in (self._log, self._tokens) if f is not None]
        for f in waiting:
            f.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


def _tokens(act_id: str, text: LiveText) -> str:
    """A ``tokens`` message: the end of an activity's live text (no ``id:``, which
    stays the log's position for a reconnection)."""
    data = json.dumps({"id": act_id, "text": text.text, "ended": text.ended}, separators=(",", ":"))
    return f"event: tokens\ndata: {data}\n\n"


def _pick_quietly(progress: RunProgress, wanted: int | None) -> PlanVersion | None:
    try:
        return _pick(progress, wanted)
    except Problem:
        return None


def _version(request: Request) -> int | None:
    text = request.query_params.get("version", "")
    if not text:
        return None
    if not text.isdigit():
        raise Problem(400, "No such plan version", "Give the version as a number, like 2.")
    return int(text)


def _pick(progress: RunProgress, wanted: int | None) -> PlanVersion | None:
    if not progress.versions:
        return None
    if wanted is None:
        return progress.versions[-1]
    for version in progress.versions:
        if version.version == wanted:
            return version
    known = ", ".join(str(v.version) for v in progress.versions)
    raise Problem(404, "No such plan version", f"This run has plan versions {known}.")


def _answer_state(info: RunInfo, progress: RunProgress, version: PlanVersion) -> str:
    """The integrated answer's box: accepted, failed, cancelled, waiting (on a person),
    running, planned (not begun), or superseded (an older plan version's)."""
    if version is not progress.versions[-1]:
        return "superseded"
    if info.status in TERMINAL_STATUSES:
        return {"completed": "accepted"}.get(info.status, info.status)
    bars = progress.stages["integrate"]
    if not bars:
        return "planned"
    return "waiting" if bars[-1].kind == "wait" and bars[-1].end_ms is None else "running"


def _entry_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as numbers, to compare two in log order."""
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0)) if ms.isdigit() and (seq or "0").isdigit() else (0, 0)


def _last_ms(progress: RunProgress) -> int:
    head = progress.last_id.split("-", 1)[0]
    return int(head) if head.isdigit() else progress.start_ms


def _budget(text: str, errors: dict[str, str]) -> float | None:
    if not text:
        return None
    try:
        value = Decimal(text.removeprefix("$"))
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value <= 0 or value > 1_000_000:
        errors["budget"] = "Give the budget as a positive amount of US dollars, like 2.50."
        return None
    return float(value)


def _key(key: str) -> bool:
    """A form's idempotency key as the form made it (32 hex digits)."""
    return len(key) == 32 and all(c in "0123456789abcdef" for c in key)
