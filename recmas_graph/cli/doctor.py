"""``recmas doctor``: what this machine offers the parts of recmas_graph that depend on it.

Today: the code sandbox (:mod:`recmas_graph.tools.sandbox`): whether the OS boundary
(bubblewrap) works here, which boundary ``RECMAS_SANDBOX`` asks for, and which one code will run
behind. Exit status 1 when ``RECMAS_SANDBOX=strict`` and no OS boundary is available.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ..tools.sandbox import default_boundary, os_boundary
from . import app, console

__all__ = ["doctor_command", "doctor_report"]


def doctor_report() -> dict[str, Any]:
    """The facts ``recmas doctor`` prints, as plain data."""
    from .. import __version__

    wall = os_boundary()
    mode = default_boundary()
    if mode == "audit":
        runs = "audit"
    elif wall.name is not None:
        runs = wall.name
    else:
        runs = "refused" if mode == "strict" else "audit"
    return {
        "recmas_graph": __version__,
        "python": sys.version.split()[0],
        "sandbox": {"os_boundary": wall.name, "detail": wall.detail, "hint": wall.hint,
                    "setting": mode, "code_runs_behind": runs},
    }


@app.command("doctor")
def doctor_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Check this machine: the code sandbox's OS boundary (bubblewrap) and the RECMAS_SANDBOX setting."""
    report = doctor_report()
    box = report["sandbox"]
    if as_json:
        console.print_json(json.dumps(report))
    else:
        console.print(f"recmas_graph {report['recmas_graph']} on Python {report['python']}", highlight=False)
        if box["os_boundary"]:
            console.print(f"sandbox OS boundary: [green]{box['os_boundary']}[/green] ({box['detail']})",
                          highlight=False)
        else:
            console.print(f"sandbox OS boundary: [bold red]none[/bold red] ({box['detail']})", highlight=False)
            console.print(f"  fix: {box['hint']}", highlight=False, soft_wrap=True)
        behind = {"bubblewrap": "bubblewrap + the audit layer", "audit": "the audit layer alone",
                  "refused": "nothing: runs are refused (strict needs the OS boundary)"}[box["code_runs_behind"]]
        console.print(f"RECMAS_SANDBOX={box['setting']}: sandboxed code runs behind {behind}", highlight=False)
    if box["code_runs_behind"] == "refused":
        raise typer.Exit(1)
