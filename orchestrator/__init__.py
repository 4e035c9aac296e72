"""taskloom: a durable, Redis-backed orchestrator for LLM subagents.

The public API::

    from orchestrator import Orchestrator, Context, workflow, activity
"""

from .client import Orchestrator, RunHandle
from .context import Context
from .definitions import ActivityDef, Registry, WorkflowDef, activity, workflow
from .errors import (
    ActivityError,
    ChildWorkflowError,
    ConfigurationError,
    EmbeddedRedisError,
    LeaseLostError,
    NondeterminismError,
    RedisUnavailableError,
    RunCancelledError,
    RunFailedError,
    RunIdConflictError,
    RunNotFoundError,
    SerializationError,
    StoreError,
    TaskloomError,
    UnknownActivityError,
    UnknownWorkflowError,
    UserError,
    WorkflowError,
)
from .settings import Settings
from .store import Event, RunInfo, Store
from .worker import ActivityInfo, Worker, activity_info

__all__ = [
    "ActivityDef",
    "ActivityError",
    "ActivityInfo",
    "ChildWorkflowError",
    "ConfigurationError",
    "Context",
    "EmbeddedRedisError",
    "Event",
    "LeaseLostError",
    "NondeterminismError",
    "Orchestrator",
    "RedisUnavailableError",
    "Registry",
    "RunCancelledError",
    "RunFailedError",
    "RunHandle",
    "RunIdConflictError",
    "RunInfo",
    "RunNotFoundError",
    "SerializationError",
    "Settings",
    "Store",
    "StoreError",
    "TaskloomError",
    "UnknownActivityError",
    "UnknownWorkflowError",
    "UserError",
    "Worker",
    "WorkflowDef",
    "WorkflowError",
    "activity",
    "activity_info",
    "workflow",
]
__version__ = "0.1.0"
