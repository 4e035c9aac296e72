"""The engine: durable runs on Redis, and nothing above them.

Runs as append-only event logs (``store``, ``keys``, ``scripts`` with the package's
``lua/``, ``serde``), their replay (``definitions``, ``context``, ``execution`` with
``history``, ``dispatch``, ``writes``, ``ending``, ``compensation``), the worker that
owns runs and runs activities (``worker``, ``attempt``, ``tasks``, ``batch``,
``failures``, ``retries``, ``dlq``), human tasks a run waits on (``human``), payloads
and blobs (``payloads``, ``blobs``, ``bounds``), the connection and the embedded Redis
(``connection``, ``refusals``, ``embedded``, ``durability``), waiting on streams
(``follow``), time (``clock``) and what it shows of itself (``metrics``, ``looplag``).

May import: ``taskloom.errors``, ``taskloom.settings``, ``taskloom.redaction``, and the
agent spec ``taskloom.agents.agent`` (a debt the ``.importlinter`` contracts name).
Never the pipeline, the inbox, the web, the terminal or the client.
"""
