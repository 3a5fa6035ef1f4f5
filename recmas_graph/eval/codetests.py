"""Code tasks with a full test list (MBPP+, LiveCodeBench): every test timed on its own, a pass rate.

Both metrics run the answer's last fenced code block in the sandbox of :mod:`recmas_graph.tools.sandbox`
(one sandboxed interpreter per answer: time, memory and file limits, no network, its own folder)
under a small harness that times each test with its own ``SIGALRM`` deadline, so one slow test
fails alone instead of taking the others with it:

- ``code_test_list``: the sample's ``meta["tests"]`` (each a piece of Python, e.g. an ``assert``)
  run one by one after the solution and ``meta["test_setup"]`` (imports, helpers, EvalPlus's
  ``inputs`` / ``results``), in one namespace.
- ``code_io_tests``: LiveCodeBench's ``meta["io_tests"]`` (``{"input", "output", "testtype"}``): a
  ``stdin`` test runs the program afresh with the input on stdin and compares its output line by
  line (trailing whitespace ignored); a ``functional`` test calls ``Solution().METHOD(*args)`` with
  one JSON argument per input line and compares the result with the JSON output.

``correct`` means every test passed; the record's ``scores`` hold ``pass_rate`` (tests passed / tests),
and ``extraction`` says how many passed and why the first failure failed. ``meta["test_timeout_s"]``
sets the per-test limit (default :data:`TEST_TIMEOUT_S`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import RunError
from .scoring import Metric, Score, extract_code

__all__ = ["TEST_TIMEOUT_S", "run_test_list", "score_code_test_list", "score_code_io_tests", "CODE_METRICS"]

#: Seconds each test may take (the official runner gives MBPP+ 10 s per program).
TEST_TIMEOUT_S = 10.0

_MARK = "@@recmas-test-results@@"

_HARNESS = r'''
import io as _io, json as _json, signal as _signal, sys as _sys

class _Timeout(BaseException):
    pass

def _alarm(signum, frame):
    raise _Timeout()

_signal.signal(_signal.SIGALRM, _alarm)
_ERR = _sys.stderr

def _run(source, namespace, limit, stdin=""):
    out = _io.StringIO()
    _sys.stdin, _sys.stdout, _sys.stderr = _io.StringIO(stdin), out, _io.StringIO()
    _signal.setitimer(_signal.ITIMER_REAL, limit)
    try:
        exec(compile(source, "<test>", "exec"), namespace)
        return "pass", "", out.getvalue()
    except _Timeout:
        return "timeout", "over %gs" % limit, out.getvalue()
    except AssertionError as err:
        return "fail", ("AssertionError: " + str(err))[:200], out.getvalue()
    except BaseException as err:
        return "error", ("%s: %s" % (type(err).__name__, err))[:200], out.getvalue()
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        _sys.stdin, _sys.stdout, _sys.stderr = _sys.__stdin__, _sys.__stdout__, _ERR

def _same_output(got, want):
    lines = lambda s: [l.rstrip() for l in s.strip().splitlines()]
    return lines(got) == lines(want)

_results = []
if _MODE == "asserts":
    _ns = {"__name__": "__main__"}
    _status, _why, _ = _run(_SOLUTION + "\n" + _SETUP, _ns, _LIMIT)
    if _status != "pass":
        _results = [[_status, "solution or set-up: " + _why]] * len(_TESTS)
    else:
        for _test in _TESTS:
            _results.append(list(_run(_test, _ns, _LIMIT)[:2]))
else:
    for _test in _TESTS:
        if _test.get("testtype") == "functional":
            _ns = {"__name__": "__main__"}
            _args = [_json.loads(l) for l in _test["input"].split("\n") if l.strip()]
            _ns["_args"] = _args
            _call = "_got = Solution().%s(*_args)" % _METHOD if _METHOD else "_got = None"
            _status, _why, _ = _run(_SOLUTION + "\n" + _call, _ns, _LIMIT)
            if _status == "pass" and _ns.get("_got") != _json.loads(_test["output"]):
                _status, _why = "fail", "wrong result"
        else:
            _status, _why, _out = _run(_SOLUTION, {"__name__": "__main__"}, _LIMIT, _test["input"])
            if _status == "error" and _why in ("SystemExit: 0", "SystemExit: None", "SystemExit: "):
                _status, _why = "pass", ""
            if _status == "pass" and not _same_output(_out, _test["output"]):
                _status, _why = "fail", "wrong output"
        _results.append([_status, _why])
_ERR.write("\n" + _MARK + _json.dumps(_results) + "\n")
'''


def run_test_list(code: str, tests: Sequence[Any], *, setup: str = "", mode: str = "asserts",
                  method: str | None = None, timeout_s: float = TEST_TIMEOUT_S,
                  memory_mb: int = 1024) -> list[tuple[str, str]]:
    """Run ``tests`` against ``code`` in the sandbox, each with its own ``timeout_s``; per test
    ``(status, why)`` with status ``pass``, ``fail``, ``error`` or ``timeout``. ``mode`` is
    ``asserts`` (Python snippets after ``setup``) or ``io`` (LiveCodeBench test dicts)."""
    from ..tools.sandbox import run_python

    if not tests:
        return []
    program = (f"_MODE = {mode!r}\n_SOLUTION = {code!r}\n_SETUP = {setup!r}\n_TESTS = {list(tests)!r}\n"
               f"_LIMIT = {float(timeout_s)!r}\n_METHOD = {method!r}\n_MARK = {_MARK!r}\n" + _HARNESS)
    total = timeout_s * (len(tests) + 1) + 5.0
    result = run_python(program, timeout_s=total, memory_mb=memory_mb)
    if result.reason == "unsupported":
        raise RunError(result.stderr.strip(), culprit="code tests",
                       hint="install bubblewrap, or set RECMAS_SANDBOX=auto or audit (see docs/sandbox.md)")
    found = result.stderr.rfind(_MARK)
    if found < 0:  # the harness itself died (memory, the whole-run limit): every test failed
        why = result.reason or "no result"
        return [("error", f"the run ended without results ({why})")] * len(tests)
    line = result.stderr[found + len(_MARK):].strip().splitlines()[0]
    return [(str(s), str(w)) for s, w in json.loads(line)]


def _verdict(code: str, outcomes: list[tuple[str, str]]) -> Score:
    passed = sum(1 for status, _ in outcomes if status == "pass")
    failed = next(((i, s, w) for i, (s, w) in enumerate(outcomes) if s != "pass"), None)
    detail = f"{passed}/{len(outcomes)} tests passed" + (
        f"; test {failed[0] + 1}: {failed[1]}{' (' + failed[2] + ')' if failed[2] else ''}" if failed else "")
    return Score(bool(outcomes) and passed == len(outcomes), code, detail,
                 {"pass_rate": passed / len(outcomes) if outcomes else 0.0})


def score_code_test_list(output: str, gold: str, meta: Mapping[str, Any]) -> Score:
    """``code_test_list``: the last code block against every test of ``meta["tests"]`` (else the
    gold's lines), each timed on its own; correct when all pass, ``pass_rate`` besides."""
    code = extract_code(output)
    tests = list(meta.get("tests") or [line for line in gold.splitlines() if line.strip()])
    if code is None:
        return Score(False, None, "no fenced code block found", {"pass_rate": 0.0})
    outcomes = run_test_list(code, tests, setup=str(meta.get("test_setup") or ""),
                             timeout_s=float(meta.get("test_timeout_s", TEST_TIMEOUT_S)))
    return _verdict(code, outcomes)


def score_code_io_tests(output: str, gold: str, meta: Mapping[str, Any]) -> Score:
    """``code_io_tests``: the last code block against LiveCodeBench's input/output tests
    (``meta["io_tests"]``, else the gold as their JSON); correct when all pass."""
    code = extract_code(output)
    tests = list(meta.get("io_tests") or json.loads(gold or "[]"))
    if code is None:
        return Score(False, None, "no fenced code block found", {"pass_rate": 0.0})
    outcomes = run_test_list(code, tests, mode="io", method=meta.get("method"),
                             timeout_s=float(meta.get("test_timeout_s", TEST_TIMEOUT_S)))
    return _verdict(code, outcomes)


#: The code metrics with a full test list, registered with the built-ins.
CODE_METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("code_test_list", "last code block against every test of the task's list, each timed on its own; "
           "correct: all pass (pass_rate besides)", score_code_test_list, ("code",)),
    Metric("code_io_tests", "last code block against stdin/stdout or Solution-method tests (LiveCodeBench), "
           "each timed on its own; correct: all pass", score_code_io_tests, ("code",)),
)}
