"""``recmas serve`` (systems behind an OpenAI-compatible HTTP API) and ``recmas mcp`` (a system as an MCP tool).

Both build their systems as ``recmas run`` does (the same build flags: ``--models``, ``--model``,
``--device``, ``--low-memory``, ``--placement``, ``--backend ray``) and take ``run``'s flags as the
run options of a request that sets none. See docs/serving.md.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from ..errors import RecmasError, RunError
from ..runtime.options import RunOptions
from . import app, err_console
from .options import BuildArgs, with_build_options, with_run_options
from .runtime import check_backend

__all__ = ["serve_command", "mcp_command"]


def _require(*modules: str) -> None:
    """Refuse to start without the ``serve`` extra, naming what is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RunError(f"{', '.join(missing)} not installed", culprit="recmas serve",
                       hint="pip install 'recmas-graph[serve]'")


def _names(compiled: list[Any], names: list[str]) -> list[str]:
    if names and len(names) != len(compiled):
        raise RunError(f"{len(names)} --name for {len(compiled)} topologies", culprit="--name",
                       hint="give one --name per topology, in the same order (or none: each topology's own name)")
    chosen = list(names) or [c.spec.name for c in compiled]
    seen: set[str] = set()
    for name in chosen:
        if not name.strip():
            raise RunError("a model name is empty", culprit="--name", hint="give each served system a name")
        if name in seen:
            raise RunError(f"two systems are named {name!r}", culprit="--name",
                           hint="give each topology its own --name")
        seen.add(name)
    return chosen


def _build(compiled: Any, build: BuildArgs, options: RunOptions, label: str) -> Any:
    from ..distributed.choose import build_system

    def progress(agent: str, ref: str) -> None:
        err_console.print(Text(f"{label}: {ref}" if agent == "links" else f"{label}: loading {agent} ({ref})"),
                          highlight=False)

    with contextlib.redirect_stdout(sys.stderr):  # stdout is the MCP transport; keep it clean everywhere
        return build_system(compiled, backend=build.backend, ray_address=build.ray_address, on_model=progress,
                            **build.build_kwargs(options.seed or 0))


@app.command("serve")
@with_build_options
@with_run_options
def serve_command(
    topologies: Annotated[list[str], typer.Argument(help="Topologies to serve (built-in names or JSON files); each "
                                                    "is a model of the API.")],
    options: RunOptions,
    build: BuildArgs,
    name: Annotated[Optional[list[str]], typer.Option("--name", help="The model name of each topology, in order "
                                                      "(default: its own name).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1, help="Rows (questions x choices) run "
                                                "as one batch at most.")] = 8,
    batch_wait_ms: Annotated[float, typer.Option("--batch-wait-ms", min=0, help="How long a request waits for "
                                                 "others to share its batch.")] = 10.0,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="Requests waiting per system before the "
                                           "server answers 429.")] = 256,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Seconds before an unanswered request "
                                           "gets 504.")] = 600.0,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="RECMAS_API_KEY", help="Require "
                                                   "'Authorization: Bearer KEY' (default: $RECMAS_API_KEY; none: "
                                                   "open).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
) -> None:
    """Serve systems behind an OpenAI-compatible API (chat, completions, streaming, metrics).

    The port opens at once; /health answers 503 until every system is built. Ctrl-C or SIGTERM stops
    accepting requests, finishes the running ones, then exits.
    """
    _require("fastapi", "uvicorn", "prometheus_client")
    from ..plugins.manager import default_registry
    from ..serve.app import create_app
    from ..serve.models import ServeSettings
    from ..serve.server import serve_forever

    check_backend(build)
    registry = default_registry()
    compiled = [registry.compile(t) for t in topologies]  # every topology checked before the port opens
    names = _names(compiled, list(name or []))
    settings = ServeSettings(max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, max_queue=max_queue,
                             timeout_s=timeout, api_key=api_key, defaults=options)
    fastapi_app = create_app(None, settings)
    state = fastapi_app.state.recmas
    state.expected = names
    failed: list[BaseException] = []

    def build_all(server: Any) -> None:
        try:
            systems = {n: _build(c, build, options, n) for n, c in zip(names, compiled)}
        except BaseException as err:  # noqa: BLE001 - reported by the command once the server stops
            failed.append(err)
            server.should_exit = True
            return
        state.add_all(systems)
        err_console.print(Text(f"serving {', '.join(names)} at http://{host}:{port}/v1 (OpenAI API; "
                               f"health /health, metrics /metrics)", style="bold green"), highlight=False)

    serve_forever(fastapi_app, host=host, port=port, log_level=log_level, on_started=build_all)
    if failed:
        err = failed[0]
        if isinstance(err, RecmasError):
            raise err
        raise RunError(f"building the systems failed: {type(err).__name__}: {err}", culprit="recmas serve",
                       hint="rerun with --traceback for details") from err


@app.command("mcp")
@with_build_options
@with_run_options
def mcp_command(
    topology: Annotated[str, typer.Argument(help="Built-in topology name or path to a topology JSON file.")],
    options: RunOptions,
    build: BuildArgs,
    name: Annotated[Optional[str], typer.Option("--name", help="The name the tool's server gives the system "
                                                "(default: the topology's).")] = None,
) -> None:
    """Serve a system as an MCP tool ('ask') over stdio, for coding agents and desktop assistants.

    Progress goes to stderr: stdout carries the protocol.
    """
    _require("mcp")
    from ..plugins.manager import default_registry
    from ..serve.mcp import mcp_server

    check_backend(build)
    compiled = default_registry().compile(topology)
    system = _build(compiled, build, options, name or compiled.spec.name)
    err_console.print(Text(f"MCP server for {name or compiled.spec.name} ready on stdio (tool 'ask')"),
                      highlight=False)
    mcp_server(system, name=name, options=options).run("stdio")
