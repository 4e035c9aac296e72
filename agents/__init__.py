"""agents (built in a later issue)."""

__all__: list[str] = []
