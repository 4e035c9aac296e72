"""The web inbox (``taskloom serve``): server-rendered pages over Starlette."""
