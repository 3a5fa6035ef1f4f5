"""The ``recmas`` command line: a thin typed layer over the library (typer + rich).

Every command lives in a submodule that adds itself to :data:`app`. Errors of type
:class:`~recmas_graph.errors.RecmasError` exit with status 2 and a short message on stderr; the
global ``--traceback`` flag shows the Python traceback too.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
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
console = Console()
err_console = Console(stderr=True)
_state = {"traceback": False}


@app.callback()
def _root(
    traceback: Annotated[bool, typer.Option("--traceback", help="Show the Python traceback on errors.")] = False,
) -> None:
    """Run, inspect and render RecursiveMAS systems."""
    _state["traceback"] = traceback


def _register_commands() -> None:
    # Imported for their side effect of adding commands to ``app``.
    for name in ("topology", "runtime", "assets", "release", "plugins_cmd"):
        try:
            __import__(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recmas`` console script."""
    _register_commands()
    args = sys.argv[1:] if argv is None else argv
    show_tb = "--traceback" in args
    try:
        app(args=args, prog_name="recmas", standalone_mode=False)
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
        import click

        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        if isinstance(exc, click.ClickException):
            exc.show()
            return 2
        if isinstance(exc, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
