"""Benchmarks of taskloom: ``python benchmarks/run.py [--json] [--quick] [--only W1,W3]``.

:mod:`benchmarks.workloads` holds the workflows and activities a benchmark worker serves
(``taskloom worker --import benchmarks.workloads``); :mod:`benchmarks.run` drives them
and a plain redis-py baseline against one Redis and reports the numbers.
"""
