"""The built-in roles: prompt templates of the built-in styles (sequential, mixture, distillation,
deliberation) and a generic ``assistant``. Registered by :mod:`recmas_graph.plugins.builtin`.

>>> sorted(BUILTIN_ROLES)[:3]
['assistant', 'code_expert', 'critic']
"""

from __future__ import annotations

from ..topology.roles import Role, SlotSection

__all__ = ["BUILTIN_ROLES"]


def _role(name: str, description: str, default: str, slots: list[tuple[str, str]] = (), answers: bool = False,
          **per_task: str) -> Role:
    instructions = {"default": default, **per_task}
    return Role(name, description, instructions, tuple(SlotSection(n, h) for n, h in slots), answers)


_Q = "Question:\n{question}"

BUILTIN_ROLES: dict[str, Role] = {
    r.name: r
    for r in [
        _role("assistant", "A single agent answering on its own (baselines, generic nodes).",
              f"{_Q}", answers=True),
        # sequential styles
        _role("planner", "Outlines a step-by-step plan for the question without solving it.",
              f"You are the Planner in a team of agents. Read the question and write a concise, "
              f"step-by-step plan for solving it. Do not compute the final answer.\n\n{_Q}",
              [("feedback", "Feedback from the team's previous attempt:")],
              code=f"You are the Planner in a team of agents. Read the programming task and outline "
                   f"the algorithm, the edge cases and the function signature. Do not write the full "
                   f"code.\n\n{_Q}"),
        _role("critic", "Checks a plan for mistakes and gaps.",
              f"You are the Critic in a team of agents. Check the plan for the question below: point "
              f"out mistakes, missing steps and risky assumptions, and suggest corrections.\n\n{_Q}",
              [("plan", "Plan from the Planner:")]),
        _role("solver", "Solves the question using the plan and the critique.",
              f"You are the Solver in a team of agents. Solve the question, using the plan and the "
              f"critique where they help.\n\n{_Q}",
              [("plan", "Plan from the Planner:"), ("critique", "Critique from the Critic:")], answers=True),
        # mixture
        _role("math_expert", "Mathematics specialist of a mixture of experts.",
              f"You are a mathematics expert. Analyse the question from a mathematical point of view "
              f"and work out the key quantities.\n\n{_Q}",
              [("feedback", "Summary of the team's previous round:")]),
        _role("code_expert", "Programming specialist of a mixture of experts.",
              f"You are a programming expert. Analyse the question from an algorithmic point of view; "
              f"sketch code where it helps.\n\n{_Q}",
              [("feedback", "Summary of the team's previous round:")]),
        _role("science_expert", "Science and medicine specialist of a mixture of experts.",
              f"You are a science and medicine expert. Analyse the question using domain knowledge "
              f"and recall the relevant facts.\n\n{_Q}",
              [("feedback", "Summary of the team's previous round:")]),
        _role("summarizer", "Combines the experts' analyses into one answer.",
              f"You are the Summarizer of a team of experts. Combine their analyses, resolve "
              f"disagreements and answer the question.\n\n{_Q}",
              [("math", "Analysis from the mathematics expert:"), ("code", "Analysis from the programming expert:"),
               ("science", "Analysis from the science expert:")], answers=True),
        # distillation
        _role("expert", "Strong model that guides a learner.",
              f"You are an Expert tutor. Work out the key ideas and the solution path for the question "
              f"so that a learner can follow them.\n\n{_Q}",
              [("feedback", "The learner's previous attempt:")]),
        _role("learner", "Smaller model that answers with the expert's guidance.",
              f"You are a Learner. Answer the question, following the expert's guidance.\n\n{_Q}",
              [("guidance", "Guidance from the Expert:")], answers=True),
        # deliberation
        _role("reflector", "Reflects on the question and on previous tool results.",
              f"You are the Reflector. Think about what the question really asks, what could go wrong "
              f"and which tools (for example running Python code) would help.\n\n{_Q}",
              [("feedback", "The tool caller's previous attempt:")]),
        _role("toolcaller", "Answers, calling tools while it decodes.",
              f"You are the Tool Caller. Answer the question, following the reflection; call a tool "
              f"when a computation or a lookup would help.\n\n{_Q}",
              [("reflection", "Reflection from the Reflector:")], answers=True),
    ]
}
