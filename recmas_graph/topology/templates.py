"""Prompt templates: the text of a role per task type and round, with slots anywhere in it.

A template is Jinja2 text, rendered in a sandbox (a topology file is data, never code). It sees:

- ``question``: the question (every template must use it);
- ``task``: the task type (``math``, ``choice``, ``code``, ``reasoning``); ``round`` and ``rounds``;
- one variable per slot of the agent: the slot's marker (``<<slot:NAME>>``, where the message is
  spliced in) when a message arrives in this round, ``""`` otherwise; ``slots[NAME]`` gives the same
  for slot names that are not identifiers.

- ``has_options``: whether the question has lettered option lines (``A. ...``; the reference's test
  for a multiple-choice question); ``fn_name``: the function a code question asks for (``""`` when
  unknown).

So ``{% if feedback %}Feedback:\\n{{ feedback }}\\n{% endif %}`` is a section that disappears when
there is no feedback yet. A template may also differ between round 1 and later rounds:
:class:`RoundTemplate` holds ``first`` and ``later`` text. Whitespace is Jinja's default (as in
chat templates): text is kept exactly; ``{%-`` / ``-%}`` trim around a tag.

>>> t = "Plan for: {{ question }}\\n{% if feedback %}Feedback: {{ feedback }}\\n{% endif %}Go."
>>> render_template(t, {"question": "2+2?", "feedback": ""})
'Plan for: 2+2?\\nGo.'
>>> sorted(template_names(t))
['feedback', 'question']
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Union

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

__all__ = [
    "RoundTemplate",
    "Template",
    "TEMPLATE_VARIABLES",
    "SLOT_MARKER_RE",
    "has_options",
    "slot_marker",
    "split_at_markers",
    "template_for",
    "template_names",
    "template_problems",
    "render_template",
]

#: Variables every template may use besides the agent's slots.
TEMPLATE_VARIABLES: frozenset[str] = frozenset({"question", "task", "round", "rounds", "slots", "has_options",
                                                "fn_name"})

_OPTIONS_RE = re.compile(r"(?mi)^\s*[A-D]\s*[\.\):\-]\s+")


def has_options(question: str) -> bool:
    """Whether ``question`` has lettered option lines (the reference's multiple-choice test).

    >>> has_options("Pick one:\\nA. red\\nB. blue"), has_options("What is 2 + 2?")
    (True, False)
    """
    return bool(_OPTIONS_RE.search(question))

#: A slot in rendered text: ``<<slot:NAME>>``.
SLOT_MARKER_RE = re.compile(r"<<slot:([^<>\s]+)>>")


def slot_marker(slot: str) -> str:
    """The literal marker that stands for ``slot`` in rendered prompt text.

    >>> slot_marker("plan")
    '<<slot:plan>>'
    """
    return f"<<slot:{slot}>>"


def split_at_markers(text: str) -> list[str | tuple[str]]:
    """Split rendered text into text segments and ``(slot,)`` tuples, in order.

    >>> split_at_markers("a " + slot_marker("x") + " b")
    ['a ', ('x',), ' b']
    """
    parts: list[str | tuple[str]] = []
    pos = 0
    for match in SLOT_MARKER_RE.finditer(text):
        parts.append(text[pos : match.start()])
        parts.append((match.group(1),))
        pos = match.end()
    parts.append(text[pos:])
    return parts


@dataclass(frozen=True)
class RoundTemplate:
    """Template text for round 1 (``first``) and for every later round (``later``; default: ``first``)."""

    first: str
    later: str | None = None

    def text(self, round: int) -> str:  # noqa: A002 - the semantics' word
        """The text used in ``round``."""
        return self.first if round <= 1 or self.later is None else self.later

    @property
    def texts(self) -> tuple[str, ...]:
        """Every distinct text of this template."""
        return (self.first,) if self.later is None else (self.first, self.later)


#: A template: one text for every round, or a :class:`RoundTemplate`.
Template = Union[str, RoundTemplate]


def _texts(template: Template) -> tuple[str, ...]:
    return (template,) if isinstance(template, str) else template.texts


def template_for(templates: Mapping[str, Template], task: str) -> Template | None:
    """The template of ``task`` (falling back to ``"default"``), or ``None`` when there is neither."""
    return templates.get(task, templates.get("default"))


@lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(keep_trailing_newline=True, autoescape=False)


@lru_cache(maxsize=512)
def _compiled(text: str) -> Any:
    return _environment().from_string(text)


def template_names(template: Template) -> set[str]:
    """The variables a template uses (raises ``jinja2.TemplateSyntaxError`` on bad syntax)."""
    names: set[str] = set()
    for text in _texts(template):
        names |= meta.find_undeclared_variables(_environment().parse(text))
    return names


def template_problems(template: Template, *, slots: set[str] | None = None) -> list[str]:
    """What is wrong with a template: bad syntax, no ``question``, and (when ``slots`` is given) names
    that are neither template variables nor slots. Empty when it is fine."""
    problems: list[str] = []
    for text in _texts(template):
        try:
            names = meta.find_undeclared_variables(_environment().parse(text))
        except TemplateSyntaxError as err:
            problems.append(f"template syntax error at line {err.lineno}: {err.message}")
            continue
        if "question" not in names:
            problems.append("the template never uses {{ question }}")
        if slots is not None:
            unknown = sorted(names - TEMPLATE_VARIABLES - slots)
            for name in unknown:
                known = ", ".join(sorted(slots)) or "none"
                close = difflib.get_close_matches(name, sorted(slots | TEMPLATE_VARIABLES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"the template uses {name!r}{hint}, which is neither a slot of the agent ({known}) nor "
                                f"one of {', '.join(sorted(TEMPLATE_VARIABLES - {'slots'}))}")
    return list(dict.fromkeys(problems))


def render_template(template: Template, variables: Mapping[str, Any], round: int = 1) -> str:  # noqa: A002
    """Render ``template`` for ``round`` with ``variables``."""
    text = template if isinstance(template, str) else template.text(round)
    return _compiled(text).render(**variables)
