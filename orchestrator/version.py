"""taskloom's version, in a module of its own: the engine reads it (CLIENT SETINFO)
without importing the package's front door."""

__all__ = ["__version__"]

__version__ = "0.1.0"
