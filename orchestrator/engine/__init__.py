"""The engine: durable runs on Redis, and nothing above them.

Runs as append-only event logs (``store``, ``keys``, ``scripts`` with the package's
``lua/``, ``serde``; ``events``, the catalogue of what a log holds), their replay
(``definitions``, ``context``, ``execution`` with ``history``, ``dispatch``,
``writes``, ``ending``, ``compensation``), the worker that owns runs and runs
activities (``worker``, ``attempt``, ``tasks``, ``batch``, ``failures``, ``retries``,
``dlq``), human tasks a run waits on (``human``), payloads and blobs (``payloads``,
``blobs``, ``bounds``), the connection and the embedded Redis (``connection``,
``refusals``, ``embedded``, ``durability``), waiting on streams (``follow``), time
(``clock``), what it shows of itself (``metrics``, ``looplag``), and the hook the layers
above it install on a worker (``extensions``: the subagents are one).

May import: ``taskloom.errors``, ``taskloom.settings``, ``taskloom.redaction``,
``taskloom.luascripts``, ``taskloom.tracing``. Never the LLM layer (``taskloom.agents``),
the verifiers, the pipeline, the inbox, the web, the terminal or the client
(``[tool.importlinter]`` in ``pyproject.toml``); importing the engine loads no provider
SDK, no Jinja2 and no Starlette (a test checks it).
"""
