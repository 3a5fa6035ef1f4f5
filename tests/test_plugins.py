"""Plugins: hook specifications and their docs, registration conflicts, failing plugins, tracing,
validation hooks, the ``recmas plugins`` command and the installed example plugin end to end."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import logging
import os
import re
import subprocess
import tempfile
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from recmas_graph.errors import PluginError, TopologyError
from recmas_graph.topology import compile_topology
from recmas_graph.plugins.hookspecs import HOOK_PHASES, RecmasHookSpecs, hookimpl
from recmas_graph.plugins.manager import PLUGIN_LOGGER, Registry, set_default_registry
from recmas_graph.topology.roles import Role
from recmas_graph.topology.spec import TopologyBuilder
from recmas_graph.tools import Tool, ToolResult

ROOT = Path(__file__).resolve().parent.parent


def _hookspecs() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(getattr(RecmasHookSpecs, name))
            for name in dir(RecmasHookSpecs) if name.startswith("recmas_")}


def _signature_text(name: str, sig: inspect.Signature) -> str:
    return f"{name}({', '.join(p for p in sig.parameters if p != 'self')})"


def _role(name: str) -> Role:
    return Role(name, "test role", {"default": "Question:\n{question}"})


def _pair(**agent_kwargs: Any):
    return (TopologyBuilder("pair", rounds=1).agent("a", role="planner", model="tiny:llama", **agent_kwargs)
            .agent("b", role="solver", model="tiny:llama").edge("a", "b", slot="plan").output("b").build())


# ----------------------------------------------------------------------------- specs and docs


def test_every_hookspec_is_documented_with_its_signature() -> None:
    docs = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = [_signature_text(n, s) for n, s in _hookspecs().items() if f"`{_signature_text(n, s)}`" not in docs]
    assert not missing, f"docs/plugins.md lacks a section for: {missing}"


def test_hookspecs_have_contracts_and_phases() -> None:
    specs = _hookspecs()
    assert {"recmas_roles", "recmas_link_types", "recmas_topologies", "recmas_model_sources", "recmas_datasets",
            "recmas_metrics", "recmas_tools", "recmas_cli_commands", "recmas_validate_topology",
            "recmas_check_build", "recmas_system_built", "recmas_agent_built", "recmas_run_start", "recmas_before_pass", "recmas_after_pass",
            "recmas_run_end"} == set(specs)
    for name in specs:
        assert (getattr(RecmasHookSpecs, name).__doc__ or "").strip(), f"{name} has no docstring"
    assert sorted(n for names in HOOK_PHASES.values() for n in names) == sorted(specs)
    assert _signature_text("recmas_after_pass", specs["recmas_after_pass"]) == "recmas_after_pass(system, step, record)"
    assert _signature_text("recmas_run_start", specs["recmas_run_start"]) == "recmas_run_start(system, questions)"


# ----------------------------------------------------------------------------- registration


def test_builtins_register_everything_through_hooks(registry: Registry) -> None:
    assert registry.plugin_names == ["recmas_graph.plugins.builtin", "recmas_graph.eval.plugin", "recmas_graph.train.plugin"]
    assert {"python", "retrieve"} <= set(registry.tools)
    assert {"gsm8k", "math500", "arc_easy", "arc_challenge"} <= set(registry.datasets)
    assert {"boxed_math", "choice_letter"} <= set(registry.metrics)
    assert registry.origin[("tool", "python")] == "recmas_graph.plugins.builtin"
    assert registry.origin[("dataset", "gsm8k")] == "recmas_graph.eval.plugin"
    assert {"recmas_roles", "recmas_link_types", "recmas_model_sources", "recmas_topologies",
            "recmas_tools"} <= set(registry.hooks_of("recmas_graph.plugins.builtin"))


def test_plugin_adds_role_tool_dataset_and_metric() -> None:
    from recmas_graph.eval import Dataset, Metric, Sample, Score

    class Echo(Tool):
        name, description = "echo", "Repeat the arguments."

        def _run(self, arguments: str) -> ToolResult:
            return ToolResult(True, arguments)

    class Extras:
        @hookimpl
        def recmas_roles(self):
            return [_role("skeptic")]

        @hookimpl
        def recmas_tools(self):
            return [Echo()]

        @hookimpl
        def recmas_datasets(self):
            return [Dataset("two", "math", "two samples", lambda: [Sample("1", "1+1?", "2", "math")] * 2)]

        @hookimpl
        def recmas_metrics(self):
            return [Metric("always", "always right", lambda out, gold, meta: Score(True, out))]

    reg = Registry.create(plugins=[Extras()], load_entrypoints=False)
    assert reg.plugin_names == ["recmas_graph.plugins.builtin", "recmas_graph.eval.plugin", "recmas_graph.train.plugin", "Extras"]
    assert reg.origin[("role", "skeptic")] == "Extras" and reg.tools["echo"].run("hi").output == "hi"
    assert len(reg.datasets["two"].load()) == 2 and reg.metrics["always"].score("x", "y").correct
    assert reg.registered_by("Extras") == {"role": ["skeptic"], "tool": ["echo"], "dataset": ["two"], "metric": ["always"]}
    compile_topology(_pair(tools=["echo", "python"]), reg)


def test_two_plugins_registering_the_same_role_are_both_named() -> None:
    class First:
        @hookimpl
        def recmas_roles(self):
            return [_role("judge")]

    class Second:
        @hookimpl
        def recmas_roles(self):
            return [_role("judge")]

    with pytest.raises(PluginError) as err:
        Registry.create(plugins=[First(), Second()], load_entrypoints=False)
    text = str(err.value)
    assert "role 'judge'" in text and "'First'" in text and "'Second'" in text


def test_plugin_shadowing_a_builtin_tool_names_both() -> None:
    class Impostor(Tool):
        name, description = "python", "not the real one"

    class Shadow:
        @hookimpl
        def recmas_tools(self):
            return [Impostor()]

    with pytest.raises(PluginError, match=r"tool 'python' is registered twice: by plugin 'recmas_graph.plugins.builtin' "
                                          r"and by plugin 'Shadow'"):
        Registry.create(plugins=[Shadow()], load_entrypoints=False)


def test_plugin_raising_in_a_registration_hook_is_named_with_the_hook() -> None:
    class Broken:
        @hookimpl
        def recmas_link_types(self):
            raise RuntimeError("boom")

    with pytest.raises(PluginError) as err:
        Registry.create(plugins=[("broken-plugin", Broken())], load_entrypoints=False)
    text = str(err.value)
    assert "'broken-plugin'" in text and "recmas_link_types" in text and "RuntimeError: boom" in text
    assert isinstance(err.value.__cause__, RuntimeError)


def test_unknown_hook_name_and_bad_arguments_are_named() -> None:
    class Typo:
        @hookimpl
        def recmas_role(self):  # missing "s"
            return []

    with pytest.raises(PluginError, match=r"plugin 'Typo'.*unknown hook 'recmas_role'"):
        Registry.create(plugins=[Typo()], load_entrypoints=False)

    class BadArgs:
        @hookimpl
        def recmas_after_pass(self, step, wrong):
            pass

    with pytest.raises(PluginError, match="plugin 'BadArgs'"):
        Registry.create(plugins=[BadArgs()], load_entrypoints=False)


def test_registration_hook_must_return_a_list() -> None:
    class NotAList:
        @hookimpl
        def recmas_roles(self):
            return _role("lonely")

    with pytest.raises(PluginError, match=r"plugin 'NotAList'.*must return a list"):
        Registry.create(plugins=[NotAList()], load_entrypoints=False)


def test_same_plugin_type_twice_gets_distinct_names() -> None:
    class Quiet:
        pass

    reg = Registry.create(plugins=[Quiet(), Quiet()], load_entrypoints=False)
    assert reg.plugin_names == ["recmas_graph.plugins.builtin", "recmas_graph.eval.plugin", "recmas_graph.train.plugin", "Quiet", "Quiet#2"]


# ----------------------------------------------------------------------------- call_hook and run hooks


def test_hooks_are_called_by_pluggy_with_keywords() -> None:
    seen: list[tuple[str, Any]] = []

    class A:
        @hookimpl
        def recmas_after_pass(self, step, record):
            seen.append(("A", record["agent"]))
            return "a"

    class B:
        @hookimpl
        def recmas_after_pass(self, record):  # may take fewer arguments
            seen.append(("B", record["wall_s"]))

    reg = Registry.create(plugins=[A(), B()], load_entrypoints=False)
    out = reg.call_hook("recmas_after_pass", system=None, step="s1", record={"agent": "s", "wall_s": 0.5})
    assert seen == [("B", 0.5), ("A", "s")]  # pluggy's order: the plugin registered last runs first
    assert out == ["a"]  # None results are dropped by pluggy
    assert reg.call_hook("recmas_run_start", system=None, questions=[]) == []
    seen.clear()
    reg.hooks.recmas_after_pass(system=None, step="s2", record={"agent": "t", "wall_s": 1.0})  # pluggy directly
    assert seen == [("B", 1.0), ("A", "t")]


def test_hook_wrappers_and_tryfirst_work_as_in_pluggy() -> None:
    order: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def recmas_run_start(self, questions):
            order.append("before")
            result = yield
            order.append("after")
            return result

    class First:
        @hookimpl(tryfirst=True)
        def recmas_run_start(self):
            order.append("first")

    class Plain:
        @hookimpl
        def recmas_run_start(self):
            order.append("plain")

    reg = Registry.create(plugins=[Wrapper(), Plain(), First()], load_entrypoints=False)
    reg.hooks.recmas_run_start(system=None, questions=["q"])
    assert order == ["before", "first", "plain", "after"]


def test_call_hook_wraps_exceptions_naming_plugin_and_hook() -> None:
    class Crashy:
        @hookimpl
        def recmas_before_pass(self, step):
            raise KeyError("nope")

    reg = Registry.create(plugins=[Crashy()], load_entrypoints=False)
    with pytest.raises(PluginError) as err:
        reg.call_hook("recmas_before_pass", system=None, step="p1")
    assert "plugin 'Crashy'" in str(err.value) and "recmas_before_pass" in str(err.value)
    with pytest.raises(PluginError, match="no such hook"):
        reg.call_hook("recmas_nonexistent")


# ----------------------------------------------------------------------------- validation hook


def test_validate_topology_hook_can_reject() -> None:
    class NoSolo:
        @hookimpl
        def recmas_validate_topology(self, spec, registry):
            if len(spec.agents) < 3:
                raise TopologyError("too few agents", culprit=f"topology {spec.name!r}", hint="add a third agent")

    reg = Registry.create(plugins=[NoSolo()], load_entrypoints=False)
    with pytest.raises(TopologyError, match="too few agents"):
        compile_topology(_pair(), reg)


def test_validate_topology_hook_crash_is_a_plugin_error() -> None:
    class Buggy:
        @hookimpl
        def recmas_validate_topology(self, spec):
            return spec.no_such_field

    reg = Registry.create(plugins=[Buggy()], load_entrypoints=False)
    with pytest.raises(PluginError) as err:
        compile_topology(_pair(), reg)
    assert "plugin 'Buggy'" in str(err.value) and "recmas_validate_topology" in str(err.value)


def test_unknown_tool_is_a_topology_error_naming_agent_and_tools(registry: Registry) -> None:
    with pytest.raises(TopologyError) as err:
        compile_topology(_pair(tools=["calculator"]), registry)
    text = str(err.value)
    assert "agent 'a'" in text and "'calculator'" in text and "python" in text and "retrieve" in text
    compile_topology(_pair(tools=["python", "retrieve"]), registry)


# ----------------------------------------------------------------------------- tracing


def test_trace_plugins_logs_hook_calls(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class Watcher:
        @hookimpl
        def recmas_run_start(self, questions):
            pass

    monkeypatch.setenv("RECMAS_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, logger=PLUGIN_LOGGER):
        reg = Registry.create(plugins=[Watcher()], load_entrypoints=False)
        reg.call_hook("recmas_run_start", system=None, questions=["what is 2+2?"])
        reg.plugin_manager.hook.recmas_run_start(system=None, questions=["direct call"])  # pluggy's own tracing
    messages = [r.getMessage() for r in caplog.records if r.name == PLUGIN_LOGGER]
    assert any("recmas_roles [recmas_graph.plugins.builtin]" in m for m in messages)
    assert any("finish recmas_tools" in m and "python" in m for m in messages)
    assert any("recmas_run_start [Watcher]" in m for m in messages)
    assert any("what is 2+2?" in m for m in messages)
    assert any("direct call" in m for m in messages)


def test_no_trace_by_default(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("RECMAS_TRACE_PLUGINS", raising=False)
    with caplog.at_level(logging.DEBUG, logger=PLUGIN_LOGGER):
        Registry.create(load_entrypoints=False)
    assert not [r for r in caplog.records if r.name == PLUGIN_LOGGER]


# ----------------------------------------------------------------------------- entry points


class _FakeEntryPoint:
    group = "recmas_graph"

    def __init__(self, name: str, target: Any) -> None:
        self.name, self.value, self._target = name, f"fake_{name}", target

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def _fake_dists(monkeypatch: pytest.MonkeyPatch, *eps: _FakeEntryPoint) -> None:
    dist = SimpleNamespace(entry_points=list(eps), metadata={"Name": "fake-dist"}, version="9.9")
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [dist])


def test_entry_point_plugins_load_with_their_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = SimpleNamespace(recmas_roles=hookimpl(lambda: [_role("from_ep")]))
    _fake_dists(monkeypatch, _FakeEntryPoint("fakeplug", plugin))
    reg = Registry.create(load_entrypoints=True)
    assert "from_ep" in reg.roles and reg.origin[("role", "from_ep")] == "fakeplug"
    assert reg.plugin_dists["fakeplug"] == ("fake-dist", "9.9")
    assert "from_ep" not in Registry.create(load_entrypoints=False).roles


def test_disable_plugins_env_skips_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = SimpleNamespace(recmas_roles=hookimpl(lambda: [_role("from_ep")]))
    _fake_dists(monkeypatch, _FakeEntryPoint("fakeplug", plugin))
    monkeypatch.setenv("RECMAS_DISABLE_PLUGINS", "1")
    assert "from_ep" not in Registry.create().roles
    monkeypatch.setenv("RECMAS_DISABLE_PLUGINS", "0")
    assert "from_ep" in Registry.create().roles


def test_plugin_failing_at_import_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dists(monkeypatch, _FakeEntryPoint("badplug", ImportError("No module named 'missing_dep'")))
    with pytest.raises(PluginError) as err:
        Registry.create(load_entrypoints=True)
    text = str(err.value)
    assert "plugin 'badplug'" in text and "fake-dist" in text and "missing_dep" in text
    assert "RECMAS_DISABLE_PLUGINS" in text


# ----------------------------------------------------------------------------- CLI


def test_plugins_command_lists_plugins_and_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    from recmas_graph.cli import main

    class Observer:
        @hookimpl
        def recmas_run_end(self, result):
            pass

    set_default_registry(Registry.create(plugins=[Observer()], load_entrypoints=False))
    try:
        assert main(["plugins", "--json"]) == 0
    finally:
        set_default_registry(None)
    rows = {row["plugin"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["recmas_graph.plugins.builtin"]["distribution"] == "built-in"
    assert "recmas_roles" in rows["recmas_graph.plugins.builtin"]["hooks"]
    assert rows["recmas_graph.eval.plugin"]["distribution"] == "built-in"
    assert rows["Observer"]["hooks"] == ["recmas_run_end"] and rows["Observer"]["distribution"] == "(in-process)"


def test_plugins_command_table(capsys: pytest.CaptureFixture[str], registry: Registry) -> None:
    from recmas_graph.cli import main

    assert main(["plugins", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "recmas_graph.plugins.builtin" in out and "built-in" in out and "python" in out


def test_cli_commands_hook_adds_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    from recmas_graph import cli
    from recmas_graph.cli import plugins_cmd

    class Greeter:
        @hookimpl
        def recmas_cli_commands(self, app):
            @app.command("test-plugin-hello")
            def hello() -> None:
                """Say hello (test plugin)."""
                cli.console.print("hello from a plugin")

    before = list(cli.app.registered_commands)
    state = dict(plugins_cmd._added)
    set_default_registry(Registry.create(plugins=[Greeter()], load_entrypoints=False))
    plugins_cmd._added["done"] = False
    try:
        assert cli.main(["test-plugin-hello"]) == 0
        assert "hello from a plugin" in capsys.readouterr().out
    finally:
        cli.app.registered_commands[:] = before
        plugins_cmd._added.update(state)
        set_default_registry(None)


# ----------------------------------------------------------------------------- installed example plugin


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("recmas-debate"),
                    reason="recmas-debate is not installed (pip install -e plugins/recmas-debate; "
                           "scripts/setup.sh --dev does it)")
def test_installed_debate_plugin_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RECMAS_DISABLE_PLUGINS"}
    env["COLUMNS"] = "200"

    def recmas(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "recmas_graph", *args], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rows = {row["plugin"]: row for row in json.loads(recmas("plugins", "--json"))}
    assert rows["debate"]["distribution"] == "recmas-debate"
    assert rows["debate"]["version"] == importlib.metadata.version("recmas-debate")
    assert {"recmas_roles", "recmas_topologies", "recmas_link_types"} <= set(rows["debate"]["hooks"])
    assert rows["debate"]["registers"]["topology"] == ["debate"]
    table = recmas("plugins")
    assert "debate" in table and "recmas-debate" in table
    assert re.search(r"\bdebate\b", recmas("topologies"))
    recmas("validate", "debate")
    with tempfile.TemporaryDirectory() as tmp:
        recmas("render", "debate", "-o", f"{tmp}/debate.mmd")
        assert "judge" in open(f"{tmp}/debate.mmd").read()
        out = recmas("run", "debate", "--models", "tiny", "-q", "Is 17 prime?", "--rounds", "2",
                     "--latent-steps", "2", "--max-new-tokens", "4", "--greedy", "--trace", f"{tmp}/t.jsonl")
        assert "per-stage timing" in out
        rows = [json.loads(line) for line in open(f"{tmp}/t.jsonl")]
        assert rows[-1]["agent"] == "judge" and rows[-1]["action"] == "decode"
