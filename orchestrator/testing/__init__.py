"""For tests of your own: the simulated team that answers as planner, subagents,
judge and integrator (``simulated``), and a local Redis Cluster of redis-server
processes on loopback ports (``cluster``). The fake LLM server that speaks the OpenAI and
Anthropic protocols is :mod:`taskloom.agents.fake_llm`; the clock tests move is
:class:`taskloom.ManualClock`.
"""
