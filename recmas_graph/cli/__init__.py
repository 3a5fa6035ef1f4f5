"""The ``recmas`` command line: a thin typed layer over the library (typer + rich).

Every command lives in a submodule that adds itself to :data:`app`; commands parse, call one library
function and print. Errors of type :class:`~recmas_graph.errors.RecmasError` exit with status 2 and
a short message on stderr; ``--traceback`` (before or after the command) shows the Python
traceback too.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer
from ._output import FittingConsole
from rich.text import Text

from ..errors import RecmasError

__all__ = ["app", "main", "console", "err_console"]

app = typer.Typer(
    name="recmas",
    help="Run, inspect and render RecursiveMAS systems (latent-space multi-agent LLM topologies).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = FittingConsole()
err_console = FittingConsole(stderr=True)
_state = {"traceback": False}


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        console.print(f"recmas_graph {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    traceback: Annotated[bool, typer.Option("--traceback", help="Show the Python traceback on errors (also "
                                            "accepted after the command).")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_version,
                                          is_eager=True)] = False,
) -> None:
    """Run, inspect and render RecursiveMAS systems."""
    _state["traceback"] = traceback


def _plain_flags() -> None:
    """Show on/off options as flags (``--json``), not with a ``<bool>`` type as typer 0.29 does."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - another typer layout: leave its help as it is
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_recmas_plain", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Any:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._recmas_plain = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich


def _register_commands() -> None:
    # Imported for their side effect of adding commands to ``app``.
    for name in ("topology", "prompts", "runtime", "evaluate", "train", "trace", "assets", "release", "plugins_cmd",
                 "doctor", "serve", "search", "experiment"):
        try:
            __import__(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise


def _register_plugin_commands() -> None:
    # Plugins add their commands through the hook recmas_cli_commands (once per process).
    from .plugins_cmd import add_plugin_commands

    add_plugin_commands(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recmas`` console script."""
    _register_commands()
    _plain_flags()
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    show_tb = "--traceback" in args[:end]
    if show_tb:  # accepted anywhere before "--": give it to the root, where typer expects it
        args = ["--traceback"] + [a for i, a in enumerate(args) if a != "--traceback" or i >= end]
    try:
        _register_plugin_commands()
        result = app(args=args, prog_name="recmas", standalone_mode=False)
    except RecmasError as err:
        if show_tb:
            raise
        err_console.print(Text("error: ", style="bold red") + Text(str(err)), soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except SystemExit as exc:  # typer's own exits (e.g. --help)
        return int(exc.code or 0)
    except Exception as exc:
        exits, usage_errors, aborts = _click_exception_types()
        if isinstance(exc, exits):
            return exc.exit_code
        if isinstance(exc, usage_errors):
            exc.show()
            return 2
        if isinstance(exc, aborts):
            return 1
        raise
    # standalone_mode=False: a command's ``raise typer.Exit(code)`` comes back as the return value
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(exit, usage-error, abort) exception classes of typer and click (recent typer vendors click)."""
    exits: list[type] = [typer.Exit]
    usage_errors: list[type] = []
    aborts: list[type] = [typer.Abort]
    for module_name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        usage_errors.append(module.ClickException)
        if hasattr(module, "Exit"):
            exits.append(module.Exit)
        if hasattr(module, "Abort"):
            aborts.append(module.Abort)
    return tuple(exits), tuple(usage_errors), tuple(aborts)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
