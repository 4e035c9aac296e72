"""Prompt templates: Jinja2 files rendered with StrictUndefined.

Templates ship in the ``prompts`` package (``prompts/NAME.j2``, read by Jinja2's
``PackageLoader``, so an installed wheel finds them); a user directory, when given,
overrides any of them by name and may add new ones (a ``ChoiceLoader`` asks it
first)::

    prompts = Prompts(user_dir="~/.config/taskloom/prompts")
    text = prompts.render("subagent", role="a careful analyst", task="...")

A variable the template uses but the caller did not pass is a
:class:`~taskloom.agents.errors.PromptVariableError` naming the template and the variable, never
an empty string. Autoescaping is off: these are prompts, not HTML. Block tags swallow
their own line (``trim_blocks``, ``lstrip_blocks``), so templates can be laid out
readably without leaving blank lines in the prompt.

Jinja2 loads on the first render (or listing), not on import or construction: a worker
makes its runner's :class:`Prompts` as it starts, and most start-ups render nothing.
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom.agents.errors import PromptError, PromptNotFoundError, PromptVariableError, UserError

if TYPE_CHECKING:
    import jinja2

PROMPTS_PACKAGE = "taskloom.prompts"
"""Where the shipped templates live (the checkout's ``prompts/`` folder)."""

__all__ = ["Prompts"]

SUFFIX = ".j2"


class Prompts:
    """The prompt templates of the ``prompts`` package, overridden by ``user_dir``.

    ``render(name, **variables)`` takes a name with or without ``.j2``; ``names()``
    lists what can be rendered; ``origin(name)`` says where a template comes from.
    """

    def __init__(
        self, *, user_dir: str | Path | None = None, package: str = "taskloom.prompts"
    ) -> None:
        self.package = package
        self.user_dir = None if user_dir is None else Path(user_dir).expanduser()
        if self.user_dir is not None and not self.user_dir.is_dir():
            raise UserError(
                f"prompt directory {str(self.user_dir)!r} does not exist or is not a "
                "directory; create it or pass user_dir=None"
            )
        # The shipped templates, compiled once: Jinja2's own cache checks each file's
        # mtime again on every render (a stat per model call) to reload edits, which
        # only a user directory's templates need.
        self._shipped: dict[str, jinja2.Template] = {}

    @functools.cached_property
    def _user(self) -> jinja2.FileSystemLoader | None:
        import jinja2

        return None if self.user_dir is None else jinja2.FileSystemLoader(self.user_dir)

    @functools.cached_property
    def env(self) -> jinja2.Environment:
        """The Jinja2 environment (made, and Jinja2 imported, on first use)."""
        import jinja2

        shipped = jinja2.PackageLoader(self.package, package_path="")  # templates at its root
        return jinja2.Environment(
            loader=jinja2.ChoiceLoader([shipped] if self._user is None else [self._user, shipped]),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )

    def names(self) -> list[str]:
        """Every template name that can be rendered (without ``.j2``), sorted."""
        assert self.env.loader is not None
        return sorted(
            {n.removesuffix(SUFFIX) for n in self.env.loader.list_templates() if n.endswith(SUFFIX)}
        )

    def origin(self, name: str) -> str:
        """Where template ``name`` is read from: a file path in the user directory, or
        ``package/NAME.j2``."""
        import jinja2

        file, template = self._file(name), self._template(name)
        try:  # the user directory wins when it has the file (the ChoiceLoader's order)
            if self._user is not None and self._user.get_source(self.env, file):
                return template.filename or file
        except jinja2.TemplateNotFound:
            pass
        return f"{self.package}/{file}"

    def variables(self, name: str) -> set[str]:
        """The top-level variables template ``name`` reads (required or optional)."""
        from jinja2 import meta

        template = self._file(name)
        assert self.env.loader is not None
        source, _, _ = self.env.loader.get_source(self.env, template)
        return set(meta.find_undeclared_variables(self.env.parse(source)))

    def warm(self) -> None:
        """Load Jinja2 and compile every template now (a worker does it in a thread as
        it starts), so that no render on the event loop pays for it (milliseconds a
        template). A template that does not compile is left for its render to report."""
        for name in self.names():
            with contextlib.suppress(PromptError):
                self._template(name)

    def render(self, name: str, /, **variables: Any) -> str:
        """Render template ``name`` (``subagent`` or ``subagent.j2``) with ``variables``.

        Raises :class:`~taskloom.agents.errors.PromptNotFoundError`,
        :class:`~taskloom.agents.errors.PromptVariableError` (a variable it needs was not given)
        or :class:`~taskloom.agents.errors.PromptError` (a syntax error).
        """
        import jinja2

        template = self._template(name)
        try:
            return template.render(**variables)
        except jinja2.UndefinedError as e:
            raise self._undefined(name, template, e) from None

    def _file(self, name: str) -> str:
        return name if name.endswith(SUFFIX) else name + SUFFIX

    def _template(self, name: str) -> jinja2.Template:
        file = self._file(name)
        found = self._shipped.get(file)
        if found is not None:
            return found
        import jinja2

        try:
            template = self.env.get_template(file)
            if self.user_dir is None:
                self._shipped[file] = template
            return template
        except jinja2.TemplateNotFound:
            where = f"{self.user_dir} or " if self.user_dir else ""
            raise PromptNotFoundError(
                f"no prompt template {file!r} in {where}the {self.package!r} package; "
                f"available: {', '.join(self.names()) or 'none'}"
            ) from None
        except jinja2.TemplateSyntaxError as e:
            raise PromptError(
                f"prompt template {file!r} ({e.filename or file}) has a syntax error on "
                f"line {e.lineno}: {e.message}"
            ) from None

    def _undefined(
        self,
        name: str,
        template: jinja2.Template,
        error: jinja2.UndefinedError,
    ) -> PromptVariableError:
        file = self._file(name)
        line = _template_line(error, template.filename)
        at = f" (line {line})" if line else ""
        m = re.fullmatch(r"'([^']+)' is undefined", str(error))
        if m:
            return PromptVariableError(
                f"prompt template {file!r} needs variable {m[1]!r}{at}, which was not "
                f"given. Pass it: render({name!r}, {m[1]}=...), or make it optional in the "
                f"template with {{% if {m[1]} is defined %}}"
            )
        return PromptVariableError(
            f"prompt template {file!r}{at}: {error}. Pass the missing value, or guard it "
            "in the template with 'is defined'"
        )


def _template_line(error: BaseException, filename: str | None) -> int | None:
    """The template line an exception was raised on, from Jinja's rewritten traceback."""
    line = None
    tb = error.__traceback__
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
