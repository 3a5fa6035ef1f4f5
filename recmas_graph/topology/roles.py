"""Roles: the prompt of an agent per task type and round, with named slots that receive messages.

A role is written in one of two forms:

- **declarative** (``instructions`` + ``slots``): the user message is the role's instruction for the
  task type (with the question), one section per slot that has a message (its header, then the
  slot's marker), and, for roles that answer, the task's answer instruction;
- **templates** (``templates``): Jinja2 text per task type, with slots anywhere in it and text that
  may differ between round 1 and later rounds (see :mod:`.templates`).

Either way, a message for a slot the role does not name gets a generic section labelled with its
sender, so any role takes any inputs, and a slot with no message in a round drops its section.
Agents split the chat-formatted text at the markers and splice message embeddings in. No torch here.

>>> role = Role("solver", "Solves.", {"default": "Solve: {question}"},
...             (SlotSection("plan", "Plan:"), SlotSection("critique", "Critique:")), answers=True)
>>> text = role.render_user("What is 2+2?", "math", ["plan"])
>>> slot_marker("plan") in text and "Critique:" not in text
True
>>> tpl = Role("t", "Templated.", templates={"default": RoundTemplate("First: {{ question }}",
...            "Again: {{ question }}{% if fb %} (fb: {{ fb }}){% endif %}")})
>>> tpl.render_user("Q?", "math", [], round=1), tpl.render_user("Q?", "math", ["fb"], round=2)
('First: Q?', 'Again: Q? (fb: <<slot:fb>>)')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .templates import (RoundTemplate, Template, has_options, render_template, slot_marker, split_at_markers,
                        template_for, template_names)

__all__ = [
    "Role",
    "SlotSection",
    "RoundTemplate",
    "DEFAULT_SYSTEM_PROMPT",
    "slot_marker",
    "split_at_markers",
    "TASK_INSTRUCTIONS",
]

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

#: What the final answer must look like, per task type (appended by answering declarative roles).
TASK_INSTRUCTIONS: dict[str, str] = {
    "math": "Please reason step by step, and put your final answer within \\boxed{}.",
    "choice": "Think it through, then give the letter of the correct option within \\boxed{}, e.g. \\boxed{B}.",
    "code": "Write a complete, self-contained Python solution in a single ```python code block.",
    "reasoning": "Reason step by step, then give your final answer within \\boxed{}.",
}


@dataclass(frozen=True)
class SlotSection:
    """A slot the role knows: its name and the header shown above the message."""

    name: str
    header: str


@dataclass(frozen=True)
class Role:
    """Prompt templates of one role.

    Declarative form: ``instructions`` maps a task type (or ``"default"``) to the role's
    instruction, where ``{question}`` is replaced by the question; ``slots`` are the sections it
    knows, in prompt order; ``answers`` says whether the role is asked for a final answer in the
    task's format (planners and critics are not; solvers are).

    Template form: ``templates`` maps a task type (or ``"default"``) to Jinja2 text or a
    :class:`RoundTemplate`; it wins over ``instructions`` for the tasks it covers. ``system`` is the
    system prompt. ``tool_protocol`` names how an agent with tools writes its calls (``None``: the
    built-in fenced/``<tool>`` syntax; ``"reference"``: the official ``<python>`` / ``<search>``
    tags, whose description is then part of the system prompt).
    """

    name: str
    description: str
    instructions: Mapping[str, str] = field(default_factory=dict)
    slots: tuple[SlotSection, ...] = ()
    answers: bool = False
    system: str = DEFAULT_SYSTEM_PROMPT
    tags: tuple[str, ...] = field(default=())
    templates: Mapping[str, Template] = field(default_factory=dict)
    tool_protocol: str | None = None

    @property
    def slot_names(self) -> tuple[str, ...]:
        """Names of the slots the declarative form knows, in prompt order."""
        return tuple(s.name for s in self.slots)

    def instruction(self, task: str) -> str:
        """The declarative instruction for ``task`` (falling back to ``default``)."""
        return self.instructions.get(task, self.instructions["default"])

    def template(self, task: str) -> Template | None:
        """The template for ``task`` (or ``default``), ``None`` when the role is declarative for it."""
        return template_for(self.templates, task)

    def with_templates(self, templates: Mapping[str, Template] | None = None, system: str | None = None) -> "Role":
        """A copy whose templates (per task) and system prompt are replaced where given."""
        merged = {**self.templates, **dict(templates or {})}
        return replace(self, templates=merged, system=system if system is not None else self.system)

    def render_user(self, question: str, task: str, filled: list[str], senders: Mapping[str, str] | None = None,
                    *, round: int = 1, rounds: int | None = None,  # noqa: A002 - the semantics' word
                    fields: Mapping[str, str] | None = None) -> str:
        """Render the user message with a marker for every slot in ``filled`` (in round ``round``).

        Slots the role knows appear where it puts them; any other slot appears in a generic section
        labelled with its sender (``senders[slot]``), in the order given. Slots absent from
        ``filled`` (e.g. no feedback yet in round 1) are left out with their section. ``fields`` are
        the question's own template variables (``fn_name``).
        """
        senders = dict(senders or {})
        template = self.template(task)
        if template is not None:
            known = template_names(template)
            variables = {"fn_name": "", **dict(fields or {}), "question": question, "task": task, "round": round,
                         "rounds": rounds or round, "has_options": has_options(question),
                         "slots": {s: slot_marker(s) for s in filled}}
            variables.update({name: (slot_marker(name) if name in filled else "") for name in known
                              if name not in variables})
            text = render_template(template, variables, round)
            for slot in filled:
                if slot not in known and not ("slots" in known and not slot.isidentifier()):
                    text += f"\n\nMessage from {senders.get(slot, slot)}:\n{slot_marker(slot)}"
            return text
        parts = [self.instruction(task).format(question=question).strip()]
        for section in self.slots:
            if section.name in filled:
                parts.append(f"{section.header}\n{slot_marker(section.name)}")
        for slot in filled:
            if slot not in self.slot_names:
                parts.append(f"Message from {senders.get(slot, slot)}:\n{slot_marker(slot)}")
        if self.answers:
            parts.append(TASK_INSTRUCTIONS.get(task, TASK_INSTRUCTIONS["reasoning"]))
        return "\n\n".join(parts)
