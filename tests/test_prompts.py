"""Prompts as templates: the reference role set pinned to the official strings, custom templates in a
topology, `recmas prompts`, the reference settings per task, and links running in their file's dtype.

The expected strings below were written by hand from the official ``prompts.py`` and
``inference_utils/reflector_tool_notes.py`` of the RecursiveMAS release code (the published links
were trained on them), with ``<<slot:NAME>>`` where the official code splits at its slot marker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import recmas_graph as rg
from recmas_graph.cli import main
from recmas_graph.errors import TopologyError
from recmas_graph.plugins import Registry
from recmas_graph.plugins.reference_roles import REFERENCE_ROLES

Q = "What is 2 + 3?"
MCQ = "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth"
STEPS = "Step 1: ...\n...\nStep n: ..."

OFFICIAL = {
    # sequential: build_math_planner_prompt / _with_feedback_slot / refiner / solver (solver_pre_question=0)
    ("planner", "math", 1): ("You are a planner agent in a multi-agent system.\nGive a plan for the question below.\n"
                             f"Question:\n{Q}\nYour response should be in the format of:\n{STEPS}"),
    ("planner", "math", 2): ("You are a planner agent in a recursive multi-agent system.\nThis is round 2.\n"
                             f"Question:\n{Q}\nFeedback signal from the previous solver round:\n<<slot:feedback>>\n"
                             "Use the feedback as a soft correction signal to improve the plan.\n"
                             "If there is any conflict, prioritize the question constraints.\n"
                             f"Output only a concise plan in the format:\n{STEPS}"),
    ("refiner", "math", 1): ("You are a refiner agent in a multi-agent system.\nThe question is:\n"
                             f"Question:\n{Q}\nThe initial plan from the planner:\nInitial Plan:\n<<slot:plan>>\n"
                             "You should refine the initial plan and respond with pure plan only in the format of:\n"
                             + STEPS),
    ("solver", "math", 1): ("You are a solver agent in a multi-agent system.\nHere is the refined plan:\n"
                            f"Refined Plan:\n<<slot:critique>>\nThe question is:\nQuestion:\n{Q}\n\n"
                            "Solve the question given information and put the final answer inside \\boxed{}, "
                            "for example \\boxed{1}."),
    ("solver", "choice", 1): ("You are a solver agent in a multi-agent system.\nHere is the refined plan:\n"
                              f"Refined Plan:\n<<slot:critique>>\nThe question is:\nQuestion:\n{MCQ}\n\n"
                              "Solve the question and put the final choice inside \\boxed{}, for example \\boxed{A}."),
    ("planner", "code", 1): ("You are a planner agent in a multi-agent coding system.\n"
                             "Implement and return the function `add` only.\nThe programming problem is:\n"
                             f"{Q}\nProvide a clear step-by-step plan (within 3-6 steps) to solve the problem.\n"
                             f"Do not write code.\nYour response should be in the format of:\n{STEPS}"),
    ("refiner", "code", 1): ("You are a refiner agent in a multi-agent coding system.\n"
                             "Implement and return the function `add` only.\n\n---\nThe programming problem is:\n"
                             f"{Q}\nThe initial plan from the planner:\nInitial Plan:\n<<slot:plan>>\n"
                             "Refine the plan into a clearer and stronger step-by-step plan (within 3-6 steps).\n"
                             f"Do not write code.\nYour response should be in the format of:\n{STEPS}"),
    ("solver", "code", 1): ("You are a solver agent in a multi-agent coding system.\n"
                            "Implement and return the function `add` only.\nHere is the refined plan:\n"
                            "Refined Plan:\n<<slot:critique>>\n\n---\nThe programming problem is:\n"
                            f"{Q}\nSolve the problem and put the final code inside one markdown code block, "
                            "for example ```python\\n<your solution code>\\n```."),
    # mixture: build_hie_expert_prompt(_with_feedback_slot) / build_hie_summarizer_prompt_with_slots
    ("math_expert", "math", 1): f"You are the math expert in a multi-agent system.\nThe question is:\nQuestion:\n{Q}\n",
    ("code_expert", "math", 2): ("You are the code expert in a multi-agent system.\n"
                                 "Feedback signal from the previous summarizer round:\n<<slot:feedback>>\n"
                                 "Use the feedback as a soft correction signal, and provide a concise updated expert "
                                 f"answer for the summarizer.\nThe question is:\nQuestion:\n{Q}\n"),
    ("science_expert", "choice", 1): ("You are the science expert in a multi-agent system.\nThe question is:\n"
                                      f"Question:\n{MCQ}\n\nChoose the correct option (A/B/C/D).\n"),
    ("summarizer", "math", 1): ("You are the summarizer agent in a multi-agent system.\nMath expert signal:\n"
                                "<<slot:math>>\nCode expert signal:\n<<slot:code>>\nScience expert signal:\n"
                                "<<slot:science>>\n---\nYou may reference the three expert information.\n"
                                "Please reason step by step and solve the problem below:\nThe question is:\n"
                                f"Question:\n{Q}\nSolve the question and put the final answer inside \\boxed{{}}, "
                                "for example \\boxed{1}."),
    ("summarizer", "code", 1): ("You are the summarizer agent in a multi-agent system.\nMath expert signal:\n"
                                "<<slot:math>>\nCode expert signal:\n<<slot:code>>\nScience expert signal:\n"
                                "<<slot:science>>\n---\nYou may reference the three expert information.\n"
                                "Please reason step by step and solve the problem below:\n"
                                "Implement and return the function `add` only.\nThe programming problem is:\n"
                                f"{Q}\nSolve the problem and put the final code inside one markdown code block, "
                                "for example ```python\\n<your solution code>\\n```."),
    # distillation: build_distill_expert_prompt(_with_feedback_slot) / build_distill_learner_prompt_with_slot
    ("expert", "math", 1): ("You are the expert agent in a multi-agent system.\nThe question is:\nQuestion:\n"
                            f"{Q}\nProvide a concise, execution-ready plan that the learner can follow.\n"
                            f"Do not provide the final answer.\nYour response should be in the format:\n{STEPS}"),
    ("expert", "math", 2): ("You are the expert agent in a multi-agent system.\nFeedback signal from the previous "
                            "round:\n<<slot:feedback>>\nUse the feedback as a soft correction signal.\n"
                            f"The question is:\nQuestion:\n{Q}\nProvide a concise, execution-ready updated plan.\n"
                            f"Do not provide the final answer.\nYour response should be in the format:\n{STEPS}"),
    ("learner", "choice", 1): ("You are the learner executor in a multi-agent system.\nExpert plan:\n"
                               "<<slot:guidance>>\nUse the expert plan as guidance, but prioritize the task "
                               f"constraints.\n---\nThe question is:\nQuestion:\n{MCQ}\n\nChoose the correct option "
                               "(A/B/C/D).\nSolve the question and put the final choice inside \\boxed{}, "
                               "for example \\boxed{A}."),
    # deliberation: build_deliberation_reflector_prompt(_with_feedback_slot) / toolcaller_prompt_with_slot
    ("reflector", "math", 1): ("You are the reflector agent in a deliberation style multi-agent system.\n"
                               "You may use tools following the system instructions when helpful.\n"
                               f"The question is:\nQuestion:\n{Q}\n"),
    ("reflector", "math", 2): ("You are the reflector agent in a deliberation style multi-agent system.\n"
                               "Toolcaller feedback signal from the previous round:\n<<slot:feedback>>\n"
                               "Use the feedback as a soft guidance.\n"
                               "You may use tools following the system instructions when helpful.\n"
                               f"The question is:\nQuestion:\n{Q}\n"),
    ("toolcaller", "math", 1): ("You are the toolcaller agent in a deliberation style multi-agent system.\n"
                                "Reflector signal:\n<<slot:reflection>>\nUse the reflector signal as soft guidance.\n"
                                "You may use tools following the system instructions when helpful.\n---\n"
                                f"The question is:\nQuestion:\n{Q}\nSolve the question and put the final answer "
                                "inside \\boxed{}, for example \\boxed{1}."),
}

OFFICIAL_TOOL_NOTES = (
    "You are a helpful assistant that can solve the given question step by step with the help of the wikipedia "
    "search tool and python interpreter tool. Given a question, you need to first think about the reasoning process "
    "in the mind and then provide the answer. During thinking, you can invoke the wikipedia search tool to search "
    "and python interpreter tool to calculate the math problem for fact information about specific topics if "
    "needed. The search query and result are enclosed within <search> </search> and <result> </result> tags "
    "respectively. For example, <search> search query here </search> <result> search result here </result>, "
    "<python> python code here </python> <result> python interpreter result here </result>. In the last part of "
    "the answer, the final exact answer is enclosed within \\boxed{} with latex format.")

SLOTS = {"planner": ["feedback"], "refiner": ["plan"], "solver": ["critique"], "math_expert": ["feedback"],
         "code_expert": ["feedback"], "science_expert": ["feedback"], "summarizer": ["math", "code", "science"],
         "expert": ["feedback"], "learner": ["guidance"], "reflector": ["feedback"], "toolcaller": ["reflection"]}


@pytest.mark.parametrize("key", sorted(OFFICIAL), ids=lambda k: f"{k[0]}-{k[1]}-r{k[2]}")
def test_reference_templates_reproduce_the_official_prompts(key: tuple[str, str, int]) -> None:
    role, task, round_ = key
    question = MCQ if task == "choice" else Q
    filled = [s for s in SLOTS[role] if not (s == "feedback" and round_ == 1)]
    text = REFERENCE_ROLES[f"reference:{role}"].render_user(question, task, filled, round=round_, rounds=3,
                                                            fields={"fn_name": "add"})
    assert text == OFFICIAL[key]


def test_later_rounds_keep_the_official_round_two_text() -> None:
    planner = REFERENCE_ROLES["reference:planner"]
    assert planner.render_user(Q, "math", ["feedback"], round=3) == OFFICIAL[("planner", "math", 2)]
    assert "This is round 2." in planner.render_user(Q, "code", ["feedback"], round=2)  # as the official inference


def test_reference_system_prompts() -> None:
    assert REFERENCE_ROLES["reference:toolcaller"].system == OFFICIAL_TOOL_NOTES
    assert REFERENCE_ROLES["reference:reflector"].system == OFFICIAL_TOOL_NOTES
    assert REFERENCE_ROLES["reference:planner"].system == "You are a helpful assistant."


def test_code_interface_without_a_function_name() -> None:
    text = REFERENCE_ROLES["reference:planner"].render_user(Q, "code", [], round=1)
    assert "Implement and return the required function only.\nThe programming problem is:" in text


def test_full_size_styles_use_the_reference_roles_and_mini_styles_keep_ours(registry: Registry) -> None:
    for name in ("sequential_light", "sequential_scaled", "mixture", "distillation", "deliberation"):
        assert all(a.role.startswith("reference:") for a in registry.compile(name).spec.agents), name
        assert all(not a.role.startswith("reference:") for a in registry.compile(f"{name}_mini").spec.agents)


# --------------------------------------------------------------------------- recmas prompts


def test_prompts_command_on_an_imported_release_shows_the_official_texts(tmp_path: Path, capsys, registry) -> None:
    from test_release import HIDDEN, _write_release, load_model  # a synthetic release in the published layout

    root = _write_release(tmp_path / "rel", "sequential_light", {ref: load_model(ref) for ref in HIDDEN})
    out = tmp_path / "light.json"
    assert main(["import-release", "sequential_light", "--root", str(root), "-o", str(out),
                 "--views-dir", str(tmp_path / "views")]) == 0
    capsys.readouterr()
    assert main(["prompts", str(out), "-q", Q, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {(r["agent"], r["round"]): r for r in rows}
    assert by[("planner", 1)]["user"] == OFFICIAL[("planner", "math", 1)]
    assert by[("planner", 2)]["user"] == OFFICIAL[("planner", "math", 2)]
    assert by[("critic", 1)]["user"] == OFFICIAL[("refiner", "math", 1)]
    assert by[("solver", 3)]["user"] == OFFICIAL[("solver", "math", 1)]
    assert {r["system"] for r in rows} == {"You are a helpful assistant."}
    assert set(rows[0]) == {"agent", "round", "system", "user"}
    assert main(["prompts", str(out), "-q", Q, "--agent", "planner", "--round", "2"]) == 0
    text = capsys.readouterr().out
    assert "This is round 2." in text and "<<slot:feedback>>" in text and "refiner" not in text


def _custom(tmp_path: Path) -> Path:
    data = {"name": "custom", "rounds": 2, "latent_steps": 2, "output": "b",
            "agents": [{"name": "a", "role": "planner", "model": "tiny:llama",
                        "templates": {"default": {"first": "PLAN FIRST: {{ question }}",
                                                  "later": "PLAN AGAIN: {{ question }}\nFB: {{ feedback }}"}},
                        "system": "You are terse."},
                       {"name": "b", "role": "solver", "model": "tiny:qwen2"}],
            "edges": [{"source": "a", "target": "b", "slot": "plan"},
                      {"source": "b", "target": "a", "slot": "feedback", "recursion": True}]}
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(data))
    return path


def test_a_custom_template_changes_the_prompt_shown_and_sent(tmp_path: Path, capsys, registry, monkeypatch) -> None:
    path = _custom(tmp_path)
    assert main(["prompts", str(path), "-q", "Q?", "--json"]) == 0
    rows = {(r["agent"], r["round"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("a", 1)]["user"] == "PLAN FIRST: Q?" and rows[("a", 1)]["system"] == "You are terse."
    assert rows[("a", 2)]["user"] == "PLAN AGAIN: Q?\nFB: <<slot:feedback>>"
    sent: list[str] = []
    from recmas_graph.runtime.agent.prompts import Prompter

    original = Prompter.render

    def spy(self, question, task, filled, text_slots, senders=None, **kwargs):
        text = original(self, question, task, filled, text_slots, senders, **kwargs)
        sent.append(text)
        return text

    monkeypatch.setattr(Prompter, "render", spy)
    registry.compile(str(path)).build().run(["Q?"], greedy=True, max_new_tokens=2)
    assert any("PLAN FIRST: Q?" in t and "You are terse." in t for t in sent)
    assert any("PLAN AGAIN: Q?\nFB: <<slot:feedback>>" in t for t in sent)


def test_custom_templates_are_validated(tmp_path: Path, registry) -> None:
    data = json.loads(_custom(tmp_path).read_text())
    data["agents"][0]["templates"] = {"math": "No question here {{ feedbak }}", "poetry": "x {{ question }}"}
    with pytest.raises(Exception) as err:  # an unknown task key is a field error
        rg.compile(data, registry=registry)
    assert "poetry" in str(err.value)
    del data["agents"][0]["templates"]["poetry"]
    with pytest.raises(TopologyError) as err:
        rg.compile(data, registry=registry)
    text = str(err.value)
    assert "never uses {{ question }}" in text and "'feedbak' (did you mean 'feedback'?)" in text
    assert "agent 'a' templates.math" in text


# --------------------------------------------------------------------------- reference settings


def test_run_applies_the_topologys_settings_for_the_task(registry, monkeypatch) -> None:
    from recmas_graph.runtime import system as system_module

    seen: list[tuple[int, object]] = []
    original = system_module.execute

    def spy(schedule, runner, settings, **kwargs):
        seen.append((settings.latent_steps, settings.generation))
        return original(schedule, runner, settings, **kwargs)

    monkeypatch.setattr(system_module, "execute", spy)
    system = registry.compile("sequential_light").build(models="tiny")
    system.run(["Q?"], rounds=1, max_new_tokens=2)
    system.run(["Q?"], task="code", rounds=1, max_new_tokens=2)
    system.run(["Q?"], task="code", rounds=1, latent_steps=3, temperature=0.9, max_new_tokens=2)
    (m_math, g_math), (m_code, g_code), (m_explicit, g_explicit) = seen
    assert (m_math, m_code, m_explicit) == (48, 16, 3)
    assert (g_math.temperature, g_code.temperature, g_explicit.temperature) == (0.6, 0.2, 0.9)
    assert g_math.repetition_penalty == 1.0 and g_math.max_new_tokens == 2
    assert system.settings_for("math", "math500").max_new_tokens == 1000
    assert registry.compile("sequential_scaled").spec.settings_for("math", "math500").max_new_tokens == 2000


def test_plan_shows_the_settings_of_a_task(capsys, registry) -> None:
    assert main(["plan", "sequential_light", "--task", "code"]) == 0
    out = capsys.readouterr().out
    assert "settings for code" in out and "latent steps 16" in out and "temperature 0.2" in out


# --------------------------------------------------------------------------- link dtypes


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_links_loaded_from_bf16_files_run_in_bf16(suffix: str, tmp_path: Path, registry) -> None:
    from recmas_graph.runtime.links.checkpoints import save_link
    from recmas_graph.runtime.links.modules import InnerLnRes, OuterLnRes

    torch.manual_seed(0)
    outer = OuterLnRes(64, 48, init="torch").to(torch.bfloat16)
    inner = InnerLnRes(64, init="torch").to(torch.bfloat16)
    if suffix == ".pt":
        torch.save(outer.state_dict(), tmp_path / "outer.pt")
        torch.save(inner.state_dict(), tmp_path / "inner.pt")
    else:
        save_link(outer, tmp_path / "outer.safetensors", "outer_ln_res", 64, 48)
        save_link(inner, tmp_path / "inner.safetensors", "inner_ln_res", 64, 64)
    data = {"name": "bf16", "rounds": 1, "latent_steps": 3, "output": "b",
            "agents": [{"name": "a", "role": "planner", "model": "tiny:llama",
                        "inner_link": {"type": "inner_ln_res", "weights": f"inner{suffix}"}},
                       {"name": "b", "role": "solver", "model": "tiny:qwen2"}],
            "edges": [{"source": "a", "target": "b", "slot": "plan",
                       "link": {"type": "outer_ln_res", "weights": f"outer{suffix}"}}]}
    (tmp_path / "t.json").write_text(json.dumps(data))
    system = registry.compile(str(tmp_path / "t.json")).build()
    assert {p.dtype for p in system.outer_links["a->b"].parameters()} == {torch.bfloat16}
    assert {p.dtype for p in system.inner_links["a"].parameters()} == {torch.bfloat16}
    assert {p.dtype for p in system.inner_links["b"].parameters()} == {torch.float32}  # no weights: float32
    result = system.run(["Q?"], greedy=True, max_new_tokens=2, keep_messages=True)
    thoughts = result.thoughts[("a", 1)]
    with torch.no_grad():
        expected = outer(inner(thoughts.to(torch.bfloat16))).float()  # computed in bf16, as the reference
    torch.testing.assert_close(result.messages[("a->b", 1)], expected, rtol=0, atol=0)
