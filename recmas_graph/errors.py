"""Error types: every error names its culprit and says how to fix it."""

from __future__ import annotations

__all__ = [
    "RecmasError",
    "SpecError",
    "TopologyError",
    "ModelSourceError",
    "LinkError",
    "PluginError",
    "RunError",
]


class RecmasError(Exception):
    """Base class of every error recmas_graph raises on bad input.

    ``culprit`` names what is wrong (an agent, an edge, a field, a file, a plugin) and ``hint``
    says how to fix it. ``str(err)`` gives both on one or two lines, ready for a terminal.
    """

    def __init__(self, message: str, *, culprit: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.culprit = culprit
        self.hint = hint
        #: The individual problems when one error reports several (e.g. a topology's validation).
        self.problems: list[object] = []
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.culprit}: {self.message}" if self.culprit else self.message
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class SpecError(RecmasError):
    """A topology file or object does not parse into the spec (bad JSON, unknown or missing field)."""


class TopologyError(RecmasError):
    """A topology parses but breaks a graph rule (unknown agent, forward cycle, dead agent, ...)."""


class ModelSourceError(RecmasError):
    """A model reference cannot be resolved or loaded."""


class LinkError(RecmasError):
    """A link type is unknown, or its weights do not match the agents' hidden sizes."""


class PluginError(RecmasError):
    """A plugin failed, or two plugins registered the same name."""


class RunError(RecmasError):
    """Running a system failed for a reason the user can act on."""
