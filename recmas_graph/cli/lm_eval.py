"""``recmas-lm-eval``: lm-evaluation-harness's command line with the ``recmas`` model registered.

Every argument is lm-eval's (``--model recmas --model_args topology=...,models=... --tasks ...``);
``--traceback`` shows the traceback of an error instead of its one-line message.
"""

from __future__ import annotations

import sys

from ..errors import RecmasError

__all__ = ["main", "run"]


def main(argv: list[str] | None = None) -> int:
    """Run lm-eval's CLI on ``argv`` (default: the command line) after registering ``recmas``."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_tb = "--traceback" in args
    args = [a for a in args if a != "--traceback"]
    try:
        from lm_eval.__main__ import cli_evaluate

        import recmas_graph.eval.lmeval  # noqa: F401  (registers the model)
    except ImportError as exc:
        print(f"error: {exc}\n  fix: pip install 'recmas-graph[lmeval]'", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = ["recmas-lm-eval", *args]
    try:
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


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
