"""The command line: ``taskloom`` and its commands, chat, the live view, the inbox in
a terminal, the demo and ``doctor``.

May import everything: it is the top floor (``serve`` starts the web app).
"""
