"""Worker extensions: what a layer above the engine adds to a worker.

The engine runs workflows and activities and knows nothing of what they do. A layer
above it that serves a kind of spec of its own through activities (the subagents of
:mod:`taskloom.pipeline.subagents`: an agent spec in, a recorded model call out)
installs itself on a worker as a :class:`WorkerExtension`, with
:meth:`Worker.extend <taskloom.engine.worker.Worker.extend>`. It registers the
activities that serve it, keeps its own specs (those it is given, and those at the top
level of the modules the worker imports: :attr:`Registry.modules
<taskloom.engine.definitions.Registry.modules>`), and may give the worker's workflows a
:class:`~taskloom.engine.context.Context` subclass with methods of its own
(``ctx.agent``), which find it again with :meth:`Context.extension
<taskloom.engine.context.Context.extension>`.

Example::

    class Greeter(WorkerExtension):
        context = GreeterContext  # a Context subclass with ``ctx.greet(...)``

        def install(self, worker: Worker) -> None:
            worker.registry.add(greet)

    worker.extend(Greeter())
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, TypeVar

if TYPE_CHECKING:
    from taskloom.engine.context import Context
    from taskloom.engine.worker import Worker

__all__ = ["WorkerExtension"]


class WorkerExtension(ABC):
    """A layer above the engine, installed on one worker (one of each type)."""

    context: ClassVar[type[Context] | None] = None
    """The :class:`~taskloom.engine.context.Context` subclass the worker's workflows
    receive (``None``: the engine's own). Two extensions that both set one must be
    installed subclass last."""

    @abstractmethod
    def install(self, worker: Worker) -> None:
        """Set ``worker`` up: register the activities that serve this extension, read
        the specs in :attr:`worker.registry.modules`, keep per-worker objects in
        :attr:`worker.resources` (started and closed with the worker). Called once."""


ExtensionT = TypeVar("ExtensionT", bound=WorkerExtension)
"""A type of :class:`WorkerExtension` (what :meth:`Worker.extension` looks up)."""
