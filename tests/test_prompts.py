"""Prompt templates (taskloom.agents.prompts): StrictUndefined, the packaged templates, and a
user directory that overrides them."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pytest

from taskloom.agents.errors import PromptError, PromptNotFoundError, PromptVariableError, UserError
from taskloom.agents.prompts import Prompts


def test_the_subagent_template_ships_in_the_prompts_package() -> None:
    assert (resources.files("taskloom.prompts") / "subagent.j2").is_file()
    prompts = Prompts()
    assert "subagent" in prompts.names()
    assert prompts.origin("subagent") == "taskloom.prompts/subagent.j2"
    assert {"role", "task", "inputs", "output_schema"} <= prompts.variables("subagent")


def test_the_subagent_template_renders_what_it_is_given() -> None:
    text = Prompts().render(
        "subagent",
        role="a market analyst",
        task="Compare the three vendors.",
        inputs={"vendor notes": "A <cheap> & B 'fast'"},
        output_schema='{"type": "object"}',
        feedback="The table missed vendor C.",
    )
    assert text.startswith("You are a market analyst, one subagent")
    assert "## Your task\nCompare the three vendors." in text
    assert "### vendor notes\nA <cheap> & B 'fast'" in text  # autoescape is off
    assert '{"type": "object"}' in text and "JSON" in text
    assert "The table missed vendor C." in text
    assert "\n\n\n" not in text
    plain = Prompts().render("subagent.j2", role="a writer", task="Write a haiku.")
    assert "plain text" in plain and "Inputs" not in plain and "Feedback" not in plain


def test_a_missing_variable_names_the_template_and_the_variable() -> None:
    with pytest.raises(PromptVariableError) as caught:
        Prompts().render("subagent", role="a writer")
    message = str(caught.value)
    assert "'subagent.j2'" in message and "'task'" in message
    assert "line 17" in message  # where {{ task }} is
    assert "render('subagent', task=...)" in message
    assert isinstance(caught.value, UserError) and caught.value.code == "prompt_variable"


def test_a_missing_attribute_is_an_error_too(tmp_path: Path) -> None:
    (tmp_path / "greet.j2").write_text("Hello {{ user.name }}!\n")
    prompts = Prompts(user_dir=tmp_path)
    assert prompts.render("greet", user={"name": "Ana"}) == "Hello Ana!"
    with pytest.raises(PromptVariableError, match=r"'greet\.j2'.*line 1.*no attribute 'name'"):
        prompts.render("greet", user={})


def test_the_user_directory_overrides_by_name_and_adds(tmp_path: Path) -> None:
    (tmp_path / "subagent.j2").write_text("Custom instructions for {{ role }}.")
    (tmp_path / "planner.j2").write_text("Plan: {{ goal }}")
    prompts = Prompts(user_dir=tmp_path)
    assert prompts.render("subagent", role="a tester") == "Custom instructions for a tester."
    assert prompts.origin("subagent") == str(tmp_path / "subagent.j2")
    assert prompts.render("planner", goal="ship it") == "Plan: ship it"
    assert {"subagent", "planner"} <= set(prompts.names())
    assert "task" in Prompts().render("subagent", role="r", task="task")  # others unaffected


def test_unknown_templates_and_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(PromptNotFoundError, match=r"'nope\.j2'.*available: .*subagent"):
        Prompts().render("nope")
    (tmp_path / "broken.j2").write_text("line one\n{% if x %}unclosed\n")
    with pytest.raises(PromptError, match=r"'broken\.j2'.*syntax error on line \d"):
        Prompts(user_dir=tmp_path).render("broken", x=1)
    with pytest.raises(UserError, match="does not exist"):
        Prompts(user_dir=tmp_path / "missing")


def test_a_shipped_template_is_compiled_once_and_not_looked_up_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompts = Prompts()
    first = prompts.render("subagent", role="r", task="t")

    def looked_up(*args: object, **kwargs: object) -> None:
        raise AssertionError("the template was looked up again")

    monkeypatch.setattr(prompts.env, "get_template", looked_up)
    assert prompts.render("subagent.j2", role="r", task="t") == first
    assert prompts.render("subagent", role="r", task="t") == first


def test_a_user_template_edited_between_renders_is_read_again(tmp_path: Path) -> None:
    template = tmp_path / "note.j2"
    template.write_text("first {{ x }}")
    prompts = Prompts(user_dir=tmp_path)
    assert prompts.render("note", x=1) == "first 1"
    template.write_text("second {{ x }}")
    stat = template.stat()  # a newer mtime than the first version's, as an edit has
    os.utime(template, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert prompts.render("note", x=1) == "second 1"


def test_warming_compiles_every_template_and_leaves_a_broken_one_to_its_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken.j2").write_text("{% if %}")
    prompts = Prompts(user_dir=tmp_path)
    prompts.warm()  # the broken template does not stop the others
    compiled = {key[1] for key in prompts.env.cache}  # type: ignore[union-attr]
    assert {"subagent.j2", "judge.j2", "planner.j2", "integrator.j2"} <= compiled
    with pytest.raises(PromptError, match="syntax error"):
        prompts.render("broken")

    shipped = Prompts()
    shipped.warm()

    def compiled_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("a template was compiled at render time")

    monkeypatch.setattr(shipped.env, "compile", compiled_again)
    assert shipped.render("subagent", role="r", task="t").startswith("You are r")
