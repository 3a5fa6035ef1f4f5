"""The ``reference`` role set: the official RecursiveMAS prompts, to the character.

The published links were trained on these prompts with the models frozen, so the full-size built-in
styles and imported releases use them. They are written as templates (see
:mod:`recmas_graph.topology.templates`) from the strings of the official ``prompts.py`` and
``inference_utils/reflector_tool_notes.py`` (repository ``rexia-intel-automation/RecursiveMAS``),
and follow how its inference code uses them per style, task type and round:

- sequential (light and scaled): the planner's round-1 prompt, then in every later round the one with
  the feedback slot (which says "This is round 2." in every later round, as the official text does;
  code tasks get the math feedback prompt there too, as the official inference does); the refiner
  (our ``critic`` agent) and the solver in every round;
- mixture: the experts (round 1, then with the summarizer's feedback) and the summarizer;
- distillation: the expert (round 1, then with the learner's feedback) and the learner;
- deliberation: the reflector (round 1, then with the tool caller's feedback) and the tool caller,
  both with the official tool notes as their system prompt; the tool caller writes ``<python>`` and
  ``<search>`` calls (tool protocol ``reference``).

Task types map as the official code does: ``choice`` questions get "Choose the correct option
(A/B/C/D)." where the style's task context adds it; ``reasoning`` uses the math prompts. The code
interface line is the official function-task line ("Implement and return the function `NAME` only."
with the question's ``fn_name``, or "... the required function only." without one).

>>> sorted(REFERENCE_ROLES)[:3]
['reference:code_expert', 'reference:expert', 'reference:learner']
"""

from __future__ import annotations

from ..topology.roles import Role
from ..topology.templates import RoundTemplate

__all__ = ["REFERENCE_ROLES", "REFERENCE_SYSTEM_PROMPT", "DELIBERATION_SYSTEM_PROMPT", "reference_role_name"]

#: The official system prompt of every style but deliberation.
REFERENCE_SYSTEM_PROMPT = "You are a helpful assistant."

#: The official system prompt of both deliberation agents (``reflector_tool_notes.system_prompt``).
DELIBERATION_SYSTEM_PROMPT = (
    "You are a helpful assistant that can solve the given question step by step with the help of the wikipedia "
    "search tool and python interpreter tool. "
    "Given a question, you need to first think about the reasoning process in the mind and then provide the answer. "
    "During thinking, you can invoke the wikipedia search tool to search and python interpreter tool to calculate "
    "the math problem for fact information about specific topics if needed. "
    "The search query and result are enclosed within <search> </search> and <result> </result> tags respectively. "
    "For example, <search> search query here </search> <result> search result here </result>, <python> python code "
    "here </python> <result> python interpreter result here </result>. "
    "In the last part of the answer, the final exact answer is enclosed within \\boxed{} with latex format."
)

_STEPS = "Step 1: ...\n...\nStep n: ..."
_INTERFACE = ("{% if fn_name %}Implement and return the function `{{ fn_name }}` only."
              "{% else %}Implement and return the required function only.{% endif %}")
_CODE_FINAL = ("Solve the problem and put the final code inside one markdown code block, "
               "for example ```python\\n<your solution code>\\n```.")
_CHOICE_FINAL = "Solve the question and put the final choice inside \\boxed{}, for example \\boxed{A}."
_TASKS = ("math", "choice", "code", "reasoning")


def reference_role_name(role: str) -> str:
    """``"planner"`` -> ``"reference:planner"``."""
    return f"reference:{role}"


# ------------------------------------------------------------------------------------- sequential

_SEQ_PLANNER_LATER = (
    "You are a planner agent in a recursive multi-agent system.\n"
    "This is round 2.\n"
    "Question:\n"
    "{{ question }}\n"
    "Feedback signal from the previous solver round:\n"
    "{{ feedback }}\n"
    "Use the feedback as a soft correction signal to improve the plan.\n"
    "If there is any conflict, prioritize the question constraints.\n"
    "Output only a concise plan in the format:\n" + _STEPS
)

_SEQ_PLANNER = {
    "default": RoundTemplate(
        "You are a planner agent in a multi-agent system.\n"
        "Give a plan for the question below.\n"
        "Question:\n"
        "{{ question }}\n"
        "Your response should be in the format of:\n" + _STEPS,
        _SEQ_PLANNER_LATER),
    "code": RoundTemplate(
        "You are a planner agent in a multi-agent coding system.\n"
        + _INTERFACE + "\n"
        "The programming problem is:\n"
        "{{ question }}\n"
        "Provide a clear step-by-step plan (within 3-6 steps) to solve the problem.\n"
        "Do not write code.\n"
        "Your response should be in the format of:\n" + _STEPS,
        _SEQ_PLANNER_LATER),  # the official inference passes no task type to the feedback stage
}

_SEQ_REFINER = {
    "default": (
        "You are a refiner agent in a multi-agent system.\n"
        "The question is:\n"
        "Question:\n"
        "{{ question }}\n"
        "The initial plan from the planner:\n"
        "Initial Plan:\n"
        "{{ plan }}\n"
        "You should refine the initial plan and respond with pure plan only in the format of:\n" + _STEPS),
    "code": (
        "You are a refiner agent in a multi-agent coding system.\n"
        + _INTERFACE + "\n"
        "\n---\nThe programming problem is:\n"
        "{{ question }}\n"
        "The initial plan from the planner:\n"
        "Initial Plan:\n"
        "{{ plan }}\n"
        "Refine the plan into a clearer and stronger step-by-step plan (within 3-6 steps).\n"
        "Do not write code.\n"
        "Your response should be in the format of:\n" + _STEPS),
}

_SEQ_SOLVER = {
    "default": (
        "You are a solver agent in a multi-agent system.\n"
        "Here is the refined plan:\n"
        "Refined Plan:\n"
        "{{ critique }}\n"
        "The question is:\n"
        "Question:\n"
        "{{ question }}\n\n"
        "{% if has_options %}" + _CHOICE_FINAL + "{% else %}Solve the question given information and put the final "
        "answer inside \\boxed{}, for example \\boxed{1}.{% endif %}"),
    "code": (
        "You are a solver agent in a multi-agent coding system.\n"
        + _INTERFACE + "\n"
        "Here is the refined plan:\n"
        "Refined Plan:\n"
        "{{ critique }}\n"
        "\n---\nThe programming problem is:\n"
        "{{ question }}\n" + _CODE_FINAL),
}

# ------------------------------------------------------------- mixture, distillation, deliberation


def _task_context(task: str) -> str:
    """The official ``build_hie_task_context`` for a task type."""
    if task == "code":
        return _INTERFACE + "\nThe programming problem is:\n{{ question }}\n"
    if task == "choice":
        return ("The question is:\nQuestion:\n{{ question.rstrip() }}"
                "{% if 'choose the correct option' not in question.lower() %}\n\nChoose the correct option (A/B/C/D)."
                "{% endif %}\n")
    return "The question is:\nQuestion:\n{{ question }}\n"


def _final(task: str) -> str:
    """The official ``_hie_final_instruction`` for a task type."""
    if task == "code":
        return _CODE_FINAL
    if task == "choice":
        return _CHOICE_FINAL
    return ("{% if has_options %}" + _CHOICE_FINAL + "{% else %}Solve the question and put the final answer inside "
            "\\boxed{}, for example \\boxed{1}.{% endif %}")


def _per_task(make) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {task: make(task) for task in _TASKS}


def _expert(label: str) -> dict[str, object]:
    return _per_task(lambda t: RoundTemplate(
        f"You are the {label} in a multi-agent system.\n" + _task_context(t),
        f"You are the {label} in a multi-agent system.\n"
        "Feedback signal from the previous summarizer round:\n"
        "{{ feedback }}\n"
        "Use the feedback as a soft correction signal, and provide a concise updated expert answer for the "
        "summarizer.\n" + _task_context(t)))


_SUMMARIZER = _per_task(lambda t: (
    "You are the summarizer agent in a multi-agent system.\n"
    "Math expert signal:\n{{ math }}\n"
    "Code expert signal:\n{{ code }}\n"
    "Science expert signal:\n{{ science }}\n"
    "---\n"
    "You may reference the three expert information.\n"
    "Please reason step by step and solve the problem below:\n" + _task_context(t) + _final(t)))

_DISTILL_EXPERT = _per_task(lambda t: RoundTemplate(
    "You are the expert agent in a multi-agent system.\n" + _task_context(t)
    + "Provide a concise, execution-ready plan that the learner can follow.\n"
    "Do not provide the final answer.\n"
    "Your response should be in the format:\n" + _STEPS,
    "You are the expert agent in a multi-agent system.\n"
    "Feedback signal from the previous round:\n"
    "{{ feedback }}\n"
    "Use the feedback as a soft correction signal.\n" + _task_context(t)
    + "Provide a concise, execution-ready updated plan.\n"
    "Do not provide the final answer.\n"
    "Your response should be in the format:\n" + _STEPS))

_DISTILL_LEARNER = _per_task(lambda t: (
    "You are the learner executor in a multi-agent system.\n"
    "Expert plan:\n{{ guidance }}\n"
    "Use the expert plan as guidance, but prioritize the task constraints.\n"
    "---\n" + _task_context(t) + _final(t)))

_REFLECTOR = _per_task(lambda t: RoundTemplate(
    "You are the reflector agent in a deliberation style multi-agent system.\n"
    "You may use tools following the system instructions when helpful.\n" + _task_context(t),
    "You are the reflector agent in a deliberation style multi-agent system.\n"
    "Toolcaller feedback signal from the previous round:\n"
    "{{ feedback }}\n"
    "Use the feedback as a soft guidance.\n"
    "You may use tools following the system instructions when helpful.\n" + _task_context(t)))

_TOOLCALLER = _per_task(lambda t: (
    "You are the toolcaller agent in a deliberation style multi-agent system.\n"
    "Reflector signal:\n{{ reflection }}\n"
    "Use the reflector signal as soft guidance.\n"
    "You may use tools following the system instructions when helpful.\n"
    "---\n" + _task_context(t) + _final(t)))


def _role(name: str, description: str, templates: dict, **kwargs: object) -> Role:  # type: ignore[type-arg]
    return Role(reference_role_name(name), description, templates=templates, tags=("reference",), **kwargs)


#: The reference roles by name (``reference:<role>``).
REFERENCE_ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        _role("planner", "Official sequential planner (round-1 plan, then the feedback prompt).", _SEQ_PLANNER),
        _role("refiner", "Official sequential refiner: refines the planner's plan (our critic agent).", _SEQ_REFINER),
        _role("solver", "Official sequential solver: answers with the refined plan.", _SEQ_SOLVER),
        _role("math_expert", "Official mixture math expert.", _expert("math expert")),
        _role("code_expert", "Official mixture code expert.", _expert("code expert")),
        _role("science_expert", "Official mixture science expert.", _expert("science expert")),
        _role("summarizer", "Official mixture summarizer.", _SUMMARIZER),
        _role("expert", "Official distillation expert.", _DISTILL_EXPERT),
        _role("learner", "Official distillation learner.", _DISTILL_LEARNER),
        _role("reflector", "Official deliberation reflector.", _REFLECTOR, system=DELIBERATION_SYSTEM_PROMPT,
              tool_protocol="reference"),
        _role("toolcaller", "Official deliberation tool caller (<python> / <search> calls).", _TOOLCALLER,
              system=DELIBERATION_SYSTEM_PROMPT, tool_protocol="reference"),
    )
}
