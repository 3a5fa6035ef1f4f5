"""The texts of a pass's prompt, before the chat template: the system prompt and the user text.

Everything here is text and needs neither weights nor torch, so ``recmas prompts`` shows exactly
what each (agent, round) pass of a compiled topology is given, and :class:`~.prompts.Prompter`
builds the embeddings from the same texts. Slots appear as their markers (``<<slot:NAME>>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ...tools import TOOL_PROMPT
from ...tools.protocols import get_protocol
from ...topology.compile import CompiledTopology, agent_templates
from ...topology.roles import Role
from ...topology.spec import AgentSpec

__all__ = ["PassPrompt", "agent_role", "tool_note", "pass_prompts"]


@dataclass(frozen=True)
class PassPrompt:
    """What one (agent, round) pass is given: ``system`` and ``user`` text (slots as markers)."""

    agent: str
    round: int
    system: str
    user: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict with keys ``agent``, ``round``, ``system``, ``user``."""
        return asdict(self)


def agent_role(agent: AgentSpec, roles: Mapping[str, Role]) -> Role:
    """The agent's role with the agent's own templates and system prompt (from its spec) applied."""
    role = roles[agent.role]
    if agent.templates or agent.system is not None:
        role = role.with_templates(agent_templates(agent), agent.system)
    return role


def tool_note(role: Role, tools: Mapping[str, Any], max_calls: int) -> str:
    """The instructions appended to the user text of an agent with tools (none when the role's own
    tool protocol is described in its system prompt, as the reference roles do)."""
    if not tools or role.tool_protocol is not None:
        return ""
    return TOOL_PROMPT(tools, max_calls)


def pass_prompts(compiled: CompiledTopology, question: str, task: str = "math", *, rounds: int | None = None,
                 fields: Mapping[str, str] | None = None) -> list[PassPrompt]:
    """The prompt of every pass of the schedule, in execution order (``rounds``: default the spec's;
    ``fields``: the question's own template fields, e.g. ``fn_name``)."""
    schedule = compiled.schedule(rounds)
    catalog = compiled.catalog
    found: list[PassPrompt] = []
    for step in schedule.passes:
        spec = compiled.spec.agent(step.agent)
        role = agent_role(spec, catalog.roles)
        filled = [i.slot for i in step.inputs]
        senders = {i.slot: i.source for i in step.inputs}
        user = role.render_user(question, task, filled, senders, round=step.round, rounds=schedule.rounds,
                                fields=fields)
        note = tool_note(role, {n: catalog.tools[n] for n in spec.tools}, get_protocol(role.tool_protocol).max_calls)
        found.append(PassPrompt(step.agent, step.round, role.system, f"{user}\n\n{note}" if note else user))
    return found
