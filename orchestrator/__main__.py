"""``python -m taskloom``: the ``taskloom`` command."""

from taskloom.terminal.cli import main

if __name__ == "__main__":
    main()
