"""For tests of your own: the simulated team that answers as planner, subagents,
judge and integrator (``simulated``). The fake LLM server that speaks the OpenAI and
Anthropic protocols is :mod:`taskloom.agents.fake_llm`; the clock tests move is
:class:`taskloom.ManualClock`.
"""
