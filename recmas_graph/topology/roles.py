"""Roles: prompt templates per task type with named slots that receive other agents' messages.

A role renders a user message made of: the role's instruction for the task type (with the
question), one section per slot that has a message (a header, then a literal slot marker), a
generic section per message whose slot the role does not name, and a closing line. Agents later
split the chat-formatted text at the markers and splice message embeddings in. No torch here.

>>> role = Role("solver", "Solves.", {"default": "Solve: {question}"},
...             (SlotSection("plan", "Plan:"), SlotSection("critique", "Critique:")), answers=True)
>>> text = role.render_user("What is 2+2?", "math", ["plan"])
>>> slot_marker("plan") in text and "Critique:" not in text
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "Role",
    "SlotSection",
    "DEFAULT_SYSTEM_PROMPT",
    "slot_marker",
    "split_at_markers",
    "TASK_INSTRUCTIONS",
]

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
_MARKER = "<<RECMAS_SLOT:{}>>"
_MARKER_RE = re.compile(r"<<RECMAS_SLOT:([A-Za-z0-9_\-]+)>>")

#: What the final answer must look like, per task type (appended by answering roles).
TASK_INSTRUCTIONS: dict[str, str] = {
    "math": "Please reason step by step, and put your final answer within \\boxed{}.",
    "choice": "Think it through, then give the letter of the correct option within \\boxed{}, e.g. \\boxed{B}.",
    "code": "Write a complete, self-contained Python solution in a single ```python code block.",
    "reasoning": "Reason step by step, then give your final answer within \\boxed{}.",
}


def slot_marker(slot: str) -> str:
    """The literal marker that stands for ``slot`` in rendered prompt text."""
    return _MARKER.format(slot)


def split_at_markers(text: str) -> list[str | tuple[str]]:
    """Split rendered text into text segments and ``(slot,)`` tuples, in order.

    >>> split_at_markers("a " + slot_marker("x") + " b")
    ['a ', ('x',), ' b']
    """
    parts: list[str | tuple[str]] = []
    pos = 0
    for match in _MARKER_RE.finditer(text):
        parts.append(text[pos : match.start()])
        parts.append((match.group(1),))
        pos = match.end()
    parts.append(text[pos:])
    return parts


@dataclass(frozen=True)
class SlotSection:
    """A slot the role knows: its name and the header shown above the message."""

    name: str
    header: str


@dataclass(frozen=True)
class Role:
    """Prompt templates of one role.

    ``instructions`` maps a task type (or ``"default"``) to the role's instruction; ``{question}``
    is replaced by the question. ``answers`` says whether the role is asked for a final answer in
    the task's format (planners and critics are not; solvers are).
    """

    name: str
    description: str
    instructions: dict[str, str]
    slots: tuple[SlotSection, ...] = ()
    answers: bool = False
    system: str = DEFAULT_SYSTEM_PROMPT
    tags: tuple[str, ...] = field(default=())

    @property
    def slot_names(self) -> tuple[str, ...]:
        """Names of the slots this role's template knows, in prompt order."""
        return tuple(s.name for s in self.slots)

    def instruction(self, task: str) -> str:
        """The instruction for ``task`` (falling back to ``default``)."""
        return self.instructions.get(task, self.instructions["default"])

    def render_user(self, question: str, task: str, filled: list[str], senders: dict[str, str] | None = None) -> str:
        """Render the user message with markers for every slot in ``filled``.

        Slots the role knows appear under their header in template order; any other slot appears
        in a generic section labelled with its sender (``senders[slot]``), in the order given.
        Slots absent from ``filled`` (e.g. no feedback yet in round 1) are left out entirely.
        """
        senders = senders or {}
        parts = [self.instruction(task).format(question=question).strip()]
        known = self.slot_names
        for section in self.slots:
            if section.name in filled:
                parts.append(f"{section.header}\n{slot_marker(section.name)}")
        for slot in filled:
            if slot not in known:
                sender = senders.get(slot, slot)
                parts.append(f"Message from {sender}:\n{slot_marker(slot)}")
        if self.answers:
            parts.append(TASK_INSTRUCTIONS.get(task, TASK_INSTRUCTIONS["reasoning"]))
        return "\n\n".join(parts)
