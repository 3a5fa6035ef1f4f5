"""``recmas prompts``: what every (agent, round) pass of a topology is given, before the chat template."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.text import Text

from ..errors import RunError
from ..topology.spec import TASK_TYPES
from . import app, console
from ._output import terminal_text

__all__ = ["prompts_command"]

_HELP = (
    "Show the prompt of every (agent, round) pass: the system prompt and the user text before the chat "
    "template, each slot shown as its marker <<slot:NAME>> (where the message is spliced in). Needs no "
    "weights.\n\n"
    "--json prints a list of objects with keys agent, round, system, user."
)


@app.command("prompts", help=_HELP, short_help="Show the prompt every (agent, round) pass is given.")
def prompts_command(
    topology: Annotated[str, typer.Argument(metavar="TOPOLOGY", help="A registered topology name or a topology JSON file.",
                                            show_default=False)],
    question: Annotated[str, typer.Option("--question", "-q", help="The question to render.", show_default=False)],
    task: Annotated[str, typer.Option("--task", help=f"Task type: {', '.join(TASK_TYPES)}.")] = "math",
    round_: Annotated[Optional[int], typer.Option("--round", "-r", min=1, help="Only this round.")] = None,
    agent: Annotated[Optional[str], typer.Option("--agent", "-a", help="Only this agent.")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, help="Rounds to unroll (default: the topology's).")] = None,
    fn_name: Annotated[Optional[str], typer.Option("--fn-name", help="The function a code question asks for.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Print the prompts of a topology's passes for one question."""
    from ..plugins.manager import default_registry
    from ..runtime.agent.texts import pass_prompts

    if task not in TASK_TYPES:
        raise RunError(f"unknown task type {task!r}", culprit="--task", hint=f"use one of {', '.join(TASK_TYPES)}")
    compiled = default_registry().compile(topology)
    if agent is not None and agent not in compiled.spec.agent_names:
        raise RunError(f"no agent {agent!r}", culprit="--agent", hint=f"use one of: {', '.join(compiled.spec.agent_names)}")
    found = pass_prompts(compiled, question, task, rounds=rounds, fields={"fn_name": fn_name} if fn_name else None)
    found = [p for p in found if (agent is None or p.agent == agent) and (round_ is None or p.round == round_)]
    if not found:
        raise RunError("no pass matches", culprit="--agent/--round",
                       hint="see `recmas plan TOPOLOGY` for the passes of the schedule")
    if as_json:
        console.out(json.dumps([p.as_dict() for p in found], indent=2), highlight=False)
        return
    for p in found:
        console.rule(Text(f"{p.agent} · round {p.round}", style="bold"))
        console.print(Text("system:", style="bold cyan"))
        console.print(terminal_text(p.system), highlight=False, markup=False, soft_wrap=True)
        console.print(Text("user:", style="bold cyan"))
        console.print(terminal_text(p.user), highlight=False, markup=False, soft_wrap=True)
