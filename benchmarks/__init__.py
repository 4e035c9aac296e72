"""Benchmarks of taskloom: ``python benchmarks/run.py [--json] [--quick] [--only W1,W3]``.

:mod:`benchmarks.workloads` holds the workflows and activities a benchmark worker serves
(``taskloom worker --import benchmarks.workloads``); :mod:`benchmarks.run` is the entry
point that drives them and a plain redis-py baseline against one Redis and reports the
numbers. Each measurement has its module: :mod:`benchmarks.redis_baseline`, then
``w1_fanout``, ``w2_latency``, ``w3_chain``, ``w4_crash``, ``w5_subagents`` (beside
:mod:`benchmarks.sdk_baseline`, the SDK alone), ``w6_pipeline`` and ``w7_retries``, each
an ``async run(bench)`` returning its row; they share :mod:`benchmarks.harness` (sizes,
worker processes, key prefixes, cleanup) and :mod:`benchmarks.measure` (percentiles,
ideal makespans, Redis command counts); :mod:`benchmarks.report` holds the targets and
the table. :mod:`benchmarks.durability` measures the cost of ``TASKLOOM_DURABILITY=fsync``.
"""
