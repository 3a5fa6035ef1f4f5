"""``recmas plugins``: the loaded plugins, their distributions, hooks and registrations.

Also home of :func:`add_plugin_commands`, which lets plugins add commands (hook
``recmas_cli_commands``); :func:`recmas_graph.cli.main` calls it once per process.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..plugins.manager import DEFAULT_PLUGINS, PLUGIN_LOGGER, Registry, default_registry
from . import app, console

__all__ = ["plugins_command", "plugin_rows", "add_plugin_commands"]

_added = {"done": False}


def add_plugin_commands(target: typer.Typer) -> None:
    """Call every plugin's ``recmas_cli_commands(app)`` once per process.

    With ``RECMAS_TRACE_PLUGINS=1`` the hook-call trace (logger ``recmas_graph.plugins``) is shown
    on stderr.
    """
    if _added["done"]:
        return
    _added["done"] = True  # first: a failing plugin is reported once, not on every call
    if os.environ.get("RECMAS_TRACE_PLUGINS", "") not in ("", "0"):
        logger = logging.getLogger(PLUGIN_LOGGER)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("plugins: %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    default_registry().call_hook("recmas_cli_commands", app=target)


def _distribution(registry: Registry, plugin: str) -> tuple[str, str]:
    if plugin in DEFAULT_PLUGINS:
        try:
            version = importlib.metadata.version("recmas-graph")
        except importlib.metadata.PackageNotFoundError:
            from .. import __version__ as version
        return "built-in", version
    return registry.plugin_dists.get(plugin, ("(in-process)", "-"))


def plugin_rows(registry: Registry) -> list[dict[str, Any]]:
    """One dict per plugin: name, distribution, version, hooks and what it registered."""
    rows = []
    for name in registry.plugin_names:
        dist, version = _distribution(registry, name)
        registered = {kind: sorted(names) for kind, names in sorted(registry.registered_by(name).items())}
        rows.append({"plugin": name, "distribution": dist, "version": version,
                     "hooks": registry.hooks_of(name), "registers": registered})
    return rows


def _registers_text(registers: dict[str, list[str]], verbose: bool) -> str:
    if verbose:
        empty = '""'
        return "\n".join(f"{kind}: {', '.join(n or empty for n in names)}" for kind, names in registers.items())
    plural = {"topology": "topologies"}
    return ", ".join(f"{len(names)} {kind if len(names) == 1 else plural.get(kind, kind + 's')}"
                     for kind, names in registers.items())


@app.command("plugins")
def plugins_command(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every registered name.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the loaded plugins: distribution, version, implemented hooks and what they register."""
    rows = plugin_rows(default_registry())
    if as_json:
        console.print_json(json.dumps(rows))
        return
    # two columns, so that names are never cut or folded mid-word in 80 columns: the plugin (and
    # where it comes from) on the left, its hooks and what it registers wrapped at commas on the right
    table = Table(title="recmas_graph plugins", title_justify="left", box=box.SIMPLE_HEAD,
                  caption="hooks are named recmas_<hook>", caption_justify="left")
    table.add_column("plugin", no_wrap=True)
    table.add_column("hooks and what they register", overflow="fold")
    for row in rows:
        hooks = ", ".join(h.removeprefix("recmas_") for h in row["hooks"])
        registers = _registers_text(row["registers"], verbose)
        what = Text("hooks: ", style="dim") + Text(hooks or "-")
        if registers:
            what += Text("\nregisters: ", style="dim") + Text(registers)
        table.add_row(Text(row["plugin"], style="bold") + Text(f"\n{row['distribution']} {row['version']}",
                                                               style="dim"), what)
    console.print(table)
    if os.environ.get("RECMAS_DISABLE_PLUGINS", "") not in ("", "0"):
        console.print("[dim]installed plugins are disabled (RECMAS_DISABLE_PLUGINS is set)[/dim]")
