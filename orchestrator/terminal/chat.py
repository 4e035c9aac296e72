"""``taskloom chat``: a conversation. Each message is a goal, or a follow-up to the
previous result that re-plans on top of it and reuses its finished work. The history is
kept in Redis, so ``taskloom chat --resume`` continues it, even after the process was
killed mid-run (the run itself is durable and resumes on the next worker).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from taskloom.client import Orchestrator
from taskloom.display import clip, one_line
from taskloom.engine import serde
from taskloom.engine.store import Store, now_ms
from taskloom.errors import RunNotFoundError, UserError
from taskloom.terminal.console import Asker, follow
from taskloom.terminal.runview import table

__all__ = ["ChatSession", "Conversation"]

HELP = """commands:
  /runs          the runs of this conversation, with status and cost
  /inbox         open questions of this conversation's runs
  /cost          what this conversation has spent
  /model [NAME]  show or set the model (provider:model)
  /help          this list
  /quit          leave (the conversation is kept: taskloom chat --resume)
anything else is a goal, or a follow-up to the last answer"""


class Conversation:
    """One conversation's turns, in a Redis list (``{prefix}:chat:{id}``)."""

    def __init__(self, store: Store, conversation_id: str) -> None:
        self.store = store
        self.id = conversation_id

    @classmethod
    async def start(cls, store: Store) -> Conversation:
        """A new conversation."""
        conversation = cls(store, uuid.uuid4().hex[:12])
        await store.raw.zadd(store.keys.chats, {conversation.id: now_ms()})
        return conversation

    @classmethod
    async def resume(cls, store: Store, conversation_id: str | None = None) -> Conversation:
        """The conversation ``conversation_id``, or the one used last."""
        if conversation_id is None:
            latest = await store.raw.zrevrange(store.keys.chats, 0, 0)
            if not latest:
                raise UserError(
                    "there is no conversation to resume; start one with `taskloom chat`"
                )
            conversation_id = str(latest[0])
        elif await store.raw.zscore(store.keys.chats, conversation_id) is None:
            raise UserError(
                f"no conversation {conversation_id!r}; `taskloom chat --resume` picks the last one"
            )
        return cls(store, conversation_id)

    async def turns(self) -> list[dict[str, Any]]:
        """Every turn, oldest first: ``{"role": "user"|"taskloom", "text", "run_id"?}``."""
        rows = await self.store.raw.lrange(self.store.keys.chat(self.id), 0, -1)
        return [serde.loads(r) for r in rows]

    async def add(self, role: str, text: str, **extra: Any) -> None:
        """Append a turn."""
        turn = {"role": role, "text": text, "ts": now_ms(), **extra}
        # Two slots on a Redis Cluster, so no MULTI: the turn first, then the last-use
        # score that `--resume` picks by (a crash between them leaves an older score).
        pipe = self.store.raw.pipeline(transaction=False)
        pipe.rpush(self.store.keys.chat(self.id), serde.dumps(turn))
        pipe.zadd(self.store.keys.chats, {self.id: now_ms()})
        await pipe.execute()

    async def model(self) -> str | None:
        """The model of the conversation's last message (``None``: none was named)."""
        models = [t.get("model") for t in await self.turns() if t["role"] == "user"]
        return next((m for m in reversed(models) if m), None)

    async def run_ids(self) -> list[str]:
        """The runs this conversation started, oldest first."""
        return [t["run_id"] for t in await self.turns() if t.get("run_id") and t["role"] == "user"]


@dataclass
class ChatSession:
    """The read-answer loop of ``taskloom chat``."""

    orch: Orchestrator
    conversation: Conversation
    ask: Asker | None
    read: Callable[[str], str]
    out: TextIO
    model: str | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def loop(self) -> int:
        """Read messages until ``/quit`` or end of input."""
        await self.catch_up()
        while True:
            try:
                line = (await asyncio.to_thread(self.read, "you> ")).strip()
            except EOFError:
                return 0
            if not line:
                continue
            if line.startswith("/"):
                if await self.command(line) == "quit":
                    return 0
                continue
            await self.message(line)

    async def catch_up(self) -> None:
        """On ``--resume``: the story so far, and a run left unfinished is followed."""
        turns = await self.conversation.turns()
        if not turns:
            self.say(f"conversation {self.conversation.id} (type /help for commands)")
            return
        self.say(f"resuming conversation {self.conversation.id}:")
        for turn in turns[-6:]:
            self.say(f"  {turn['role']}: {one_line(turn['text'], 200)}")
        last = turns[-1]
        if last["role"] == "user" and last.get("run_id"):
            self.say(f"run {last['run_id']} was not finished; following it")
            await self.finish(last["run_id"], goal=str(last["text"]))

    async def message(self, text: str) -> None:
        """A goal, or a follow-up to the last finished run."""
        runs = await self.conversation.run_ids()
        previous = runs[-1] if runs else None
        options: dict[str, Any] = {"model": self.model}
        goal = text
        if previous is not None:
            info = await self.orch.handle(previous).info()
            if info.status == "completed":
                first_run = info if runs[0] == previous else await self.orch.handle(runs[0]).info()
                first = first_run.result or {}
                goal = f"{first.get('goal', '')}\n\nFollow-up: {text}".strip()
                options["previous"] = previous
        handle = await self.orch.submit(goal, **options)
        await self.conversation.add("user", text, run_id=handle.run_id, model=self.model)
        await self.finish(handle.run_id, goal=text)

    async def finish(self, run_id: str, *, goal: str) -> None:
        """Follow run ``run_id`` (asked for as ``goal``) to its end, and say it."""
        handle = self.orch.handle(run_id)
        followed = await follow(self.orch, handle, ask=self.ask, out=self.out, goal=goal)
        if followed.status == "completed":
            result = followed.result
            self.say(f"\ntaskloom> {result['answer']}\n")
            self.say(
                f"({result['tokens']['total']} tokens, ${result['cost_usd']:.4f}, "
                f"{result['escalations']} escalation(s); run {run_id})"
            )
            await self.conversation.add("taskloom", str(result["answer"]), answer_to=run_id)
        elif followed.status == "waiting":
            self.say(f"run {run_id} waits on a person: /inbox shows it")
        else:
            self.say(f"run {run_id} {followed.status}: {followed.error}")
            await self.conversation.add("taskloom", f"({followed.status}) {followed.error}")

    async def command(self, line: str) -> str:
        name, _, arg = line.partition(" ")
        if name in ("/quit", "/exit"):
            self.say(f"bye; `taskloom chat --resume` continues conversation {self.conversation.id}")
            return "quit"
        if name == "/help":
            self.say(HELP)
        elif name == "/model":
            self.model = arg.strip() or self.model
            self.say(f"model: {self.model or 'the default (TASKLOOM_MODEL)'}")
        elif name in ("/runs", "/cost"):
            await self.runs(summary_only=name == "/cost")
        elif name == "/inbox":
            inbox = self.orch.human_tasks
            items = [
                t
                for r in await self.conversation.run_ids()
                for t in await inbox.list(run_id=r, children=True, limit=10_000)
            ]
            for item in items:
                self.say(f"  {item.id}  {clip(item.title, 100)}")
            self.say(f"{len(items)} open question(s)")
        else:
            self.say(f"unknown command {name}; /help lists them")
        return ""

    async def runs(self, *, summary_only: bool) -> None:
        total, rows = 0.0, []
        for run_id in await self.conversation.run_ids():
            try:
                info = await self.orch.handle(run_id).info()
            except RunNotFoundError:
                continue
            result = info.result if isinstance(info.result, dict) else {}
            cost, goal = float(result.get("cost_usd", 0.0)), result.get("goal")
            total += cost
            rows.append([run_id, info.status, f"${cost:.4f}", one_line(goal or "", 60)])
        if rows and not summary_only:
            for line in table(("run", "status", "cost", "goal"), rows):
                self.say(f"  {line}")
        self.say(f"spent ${total:.4f} in this conversation")
