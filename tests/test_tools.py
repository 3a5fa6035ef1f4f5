"""Tools: the sandbox, the python and retrieve tools, and the tool loop (offline, fast)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from recmas_graph.tools import (
    BM25,
    STOP_STRINGS,
    TOOL_PROMPT,
    PythonTool,
    RetrieveTool,
    Tool,
    ToolResult,
    find_call,
    run_python,
    run_tool_loop,
)
from recmas_graph.tools.retrieve import COLLECTION_ENV, tokenize

posix_only = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX resource limits")


# ----------------------------------------------------------------------------- sandbox


@posix_only
def test_sandbox_runs_code() -> None:
    result = run_python("print(1 + 1)")
    assert result.ok and result.stdout == "2\n" and result.reason == "ok" and result.exit_code == 0


@posix_only
def test_sandbox_timeout_kills_an_infinite_loop() -> None:
    start = time.perf_counter()
    result = run_python("while True:\n    pass", timeout_s=1.5, cpu_s=30)
    assert not result.ok and result.reason == "timeout"
    assert time.perf_counter() - start < 10


@posix_only
def test_sandbox_cpu_limit() -> None:
    result = run_python("while True:\n    pass", timeout_s=20, cpu_s=1)
    assert not result.ok and result.reason in ("cpu", "timeout")


@posix_only
def test_sandbox_memory_bomb_fails_cleanly() -> None:
    result = run_python("x = bytearray(8 * 1024 ** 3)\nprint('allocated')", memory_mb=256)
    assert not result.ok and result.reason == "memory" and "allocated" not in result.stdout
    assert "MemoryError" in result.stderr
    growing = run_python("chunks = []\nwhile True:\n    chunks.append(b'x' * 10 ** 7)", memory_mb=256, timeout_s=20)
    assert not growing.ok and growing.reason == "memory"


@posix_only
def test_sandbox_refuses_reading_outside_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    for path in (str(secret), "/etc/passwd", str(Path(__file__).resolve())):
        result = run_python(f"print(open({path!r}).read())")
        assert not result.ok, path
        assert "top secret" not in result.stdout and "root:" not in result.stdout
        assert "PermissionError: sandbox: open(" in result.stderr and "refused" in result.stderr
    listing = run_python(f"import os\nprint(os.listdir({str(tmp_path)!r}))")
    assert not listing.ok and "secret.txt" not in listing.stdout


@posix_only
def test_sandbox_refuses_writing_outside_but_allows_its_own_directory(tmp_path: Path) -> None:
    target = tmp_path / "evil.txt"
    result = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert not result.ok and not target.exists() and "refused" in result.stderr
    removal = tmp_path / "keep.txt"
    removal.write_text("keep")
    assert not run_python(f"import os\nos.remove({str(removal)!r})").ok and removal.exists()
    inside = run_python("open('notes.txt', 'w').write('hi')\nprint(open('notes.txt').read())")
    assert inside.ok and inside.stdout == "hi\n"


@posix_only
def test_sandbox_directory_is_fresh_and_deleted() -> None:
    result = run_python("import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))")
    cwd, listing = result.stdout.splitlines()
    assert result.ok and listing == "['main.py']" and not Path(cwd).exists()


@posix_only
@pytest.mark.parametrize("code", [
    "import subprocess\nsubprocess.run(['echo', 'hi'])",
    "import os\nos.system('echo hi')",
    "import os\nos.fork()",
    "import os\nos.execv('/bin/echo', ['echo'])",
    "import socket\nsocket.create_connection(('127.0.0.1', 9))",
    "import ctypes\nctypes.CDLL(None).system(b'echo hi')",
])
def test_sandbox_refuses_processes_sockets_and_native_calls(code: str) -> None:
    result = run_python(code)
    assert not result.ok and "sandbox" in result.stderr and "hi" not in result.stdout


@posix_only
def test_sandbox_environment_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECMAS_SECRET_TOKEN", "abc123")
    result = run_python("import os\nprint(sorted(os.environ))")
    assert result.ok and "RECMAS_SECRET_TOKEN" not in result.stdout and "abc123" not in result.stdout


@posix_only
def test_sandbox_truncates_output_and_reports_errors() -> None:
    big = run_python("print('x' * 50000)", max_output_chars=100)
    assert big.ok and big.truncated and big.stdout.startswith("x" * 100) and "truncated" in big.stdout
    err = run_python("raise ValueError('boom')")
    assert not err.ok and err.reason == "error" and err.exit_code == 1
    assert err.stderr.rstrip().endswith("ValueError: boom") and '"<string>"' not in err.stderr
    assert "exited with status 1" in err.error_text


@posix_only
def test_sandbox_stdlib_and_sympy_import() -> None:
    result = run_python("import fractions, json, math\nimport sympy\nprint(sympy.factor('x**2 - 1'))", timeout_s=60)
    assert result.ok, result.stderr
    assert result.stdout.strip() == "(x - 1)*(x + 1)"


# ----------------------------------------------------------------------------- tools


@posix_only
def test_python_tool() -> None:
    tool = PythonTool()
    ok = tool.run("print(sum(range(10)))")
    assert ok.ok and ok.output == "45\n" and ok.error is None and ok.elapsed_s > 0
    bad = tool.run("print(1/0)")
    assert not bad.ok and "ZeroDivisionError" in bad.error


def test_tool_base_turns_exceptions_into_failed_results() -> None:
    class Flaky(Tool):
        name = "flaky"

        def _run(self, arguments: str) -> ToolResult:
            raise RuntimeError("flaked")

    result = Flaky().run("x")
    assert not result.ok and "tool 'flaky' failed: RuntimeError: flaked" in result.error


def test_bm25_ranks_by_term_rarity_and_frequency() -> None:
    docs = [tokenize(t) for t in ("the cat sat on the mat", "the dog chased the cat", "quantum chromodynamics")]
    bm = BM25(docs)
    assert [i for i, _ in bm.search(tokenize("quantum"))] == [2]
    assert [i for i, _ in bm.search(tokenize("dog cat"))][0] == 1
    assert bm.search(tokenize("unrelated words")) == []


def test_retrieve_finds_the_right_doc_in_a_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "paris.md").write_text("# Paris\nParis is the capital of France, on the Seine.")
    (tmp_path / "sub" / "berlin.txt").write_text("Berlin is the capital of Germany, on the Spree.")
    (tmp_path / "ignored.bin").write_bytes(b"capital of Germany")
    tool = RetrieveTool(tmp_path, k=1)
    result = tool.run("Which river flows through the capital of Germany?")
    assert result.ok and "Berlin is the capital of Germany" in result.output and "Paris" not in result.output
    assert "sub/berlin.txt" in result.output


def test_retrieve_from_jsonl_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in [
        {"id": "h2o", "title": "Water", "text": "Water boils at 100 degrees Celsius at sea level."},
        {"id": "fe", "title": "Iron", "text": "Iron melts at 1538 degrees Celsius."},
    ]) + "\n")
    monkeypatch.setenv(COLLECTION_ENV, str(path))
    result = RetrieveTool(k=1).run("melting point of iron")
    assert result.ok and "(fe)" in result.output and "1538" in result.output


def test_retrieve_without_collection_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(COLLECTION_ENV, raising=False)
    result = RetrieveTool().run("anything")
    assert not result.ok and COLLECTION_ENV in result.error and "no document collection" in result.error


def test_retrieve_bad_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "fine"}\n{"title": "no text"}\n')
    result = RetrieveTool(path).run("fine")
    assert not result.ok and "line 2" in result.error


# ----------------------------------------------------------------------------- tool loop


class _Script:
    """A fake ``generate``: returns scripted replies and records what it was given."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.seen: list[tuple[str, list[str]]] = []

    def __call__(self, continuation: str, stop: list[str]) -> str:
        self.seen.append((continuation, list(stop)))
        return self.replies.pop(0) if self.replies else ""


@posix_only
def test_tool_loop_runs_a_python_block_then_finishes() -> None:
    gen = _Script("I will compute it.\n```python\nprint(17 * 23)\n```\n", "The product is \\boxed{391}.")
    t = run_tool_loop(gen, [PythonTool()])
    assert len(t.calls) == 1 and t.stopped == "done"
    call = t.calls[0]
    assert call.name == "python" and call.arguments == "print(17 * 23)\n" and call.result.output == "391\n"
    assert "```output\n391\n```" in t.text and t.text.endswith("\\boxed{391}.")
    # the second continuation saw the tool result; every call passed the stop strings
    assert gen.seen[1][0].endswith("```output\n391\n```\n") and gen.seen[0][1] == list(STOP_STRINGS)


def test_tool_loop_tag_syntax_unknown_tool_and_text_after_the_call_dropped() -> None:
    class Upper(Tool):
        name, description = "upper", "Upper-case the text."

        def _run(self, arguments: str) -> ToolResult:
            return ToolResult(True, arguments.upper())

    gen = _Script('<tool name="upper">hello</tool> HALLUCINATED RESULT', '<tool name="nope">x</tool>', " Done.")
    t = run_tool_loop(gen, {"upper": Upper()})
    assert [c.name for c in t.calls] == ["upper", "nope"]
    assert t.calls[0].result.output == "HELLO" and "HALLUCINATED" not in t.text
    assert '<tool_result name="upper">\nHELLO\n</tool_result>' in t.text
    assert not t.calls[1].result.ok and "unknown tool 'nope'" in t.calls[1].result.error and "upper" in t.calls[1].result.error
    assert t.text.endswith(" Done.")


def test_python_blocks_are_plain_text_without_the_python_tool() -> None:
    gen = _Script("```python\nprint(1)\n```\n", "")
    t = run_tool_loop(gen, [])
    assert t.calls == [] and "```output" not in t.text


@posix_only
def test_tool_loop_is_bounded_in_calls() -> None:
    block = "```python\nprint('again')\n```\n"
    gen = _Script(*([block] * 10 + ["final answer"]))
    t = run_tool_loop(gen, [PythonTool()], max_calls=2)
    assert len(t.calls) == 2 and t.stopped == "max_calls"
    assert "Not run: the limit of 2 tool calls" in t.text and gen.seen[-1][1] == []  # last continuation: no stops


def test_tool_loop_is_bounded_in_time() -> None:
    class Slow(Tool):
        name, description = "slow", "Takes a while."

        def _run(self, arguments: str) -> ToolResult:
            time.sleep(0.2)
            return ToolResult(True, "slept")

    def gen(continuation: str, stop: list[str]) -> str:  # keeps calling tools until told to answer
        return '<tool name="slow"></tool>' if stop else "final"

    t = run_tool_loop(gen, [Slow()], max_calls=10, max_seconds=0.3)
    assert t.stopped == "max_seconds" and 1 <= len(t.calls) < 10 and t.text.endswith("final")


def test_decoding_time_does_not_count_as_tool_time() -> None:
    """A slow model still gets its first call run: only time inside tools counts."""
    replies = iter(["```python\nprint(6 * 7)\n```\n", "done"])

    def slow_gen(continuation: str, stop: list[str]) -> str:
        time.sleep(0.4)
        return next(replies)

    t = run_tool_loop(slow_gen, [PythonTool()], max_seconds=0.3)
    assert t.stopped == "done" and len(t.calls) == 1 and t.calls[0].result.output.strip() == "42"


def test_tool_loop_continues_after_a_non_call_fence() -> None:
    gen = _Script("Example:\n```\nnot code\n```\n", "Answer: 4")
    t = run_tool_loop(gen, [PythonTool()])
    assert t.calls == [] and t.text == "Example:\n```\nnot code\n```\nAnswer: 4"


def test_find_call_picks_the_first_complete_call() -> None:
    text = 'a <tool name="retrieve">paris</tool> b ```python\nprint(1)\n```'
    first = find_call(text)
    assert first.name == "retrieve" and first.arguments == "paris"
    assert find_call(text, first.end).name == "python"
    assert find_call("```python\nprint(1)\n") is None  # not closed yet


def test_tool_prompt_describes_syntax_and_tools() -> None:
    text = TOOL_PROMPT([PythonTool(), RetrieveTool()], max_calls=3)
    assert "```python" in text and "```output" in text and '<tool name="NAME">' in text
    assert "- python" in text and "- retrieve" in text and "at most 3 tool calls" in text
    assert "<tool name" not in TOOL_PROMPT([PythonTool()])


def test_sandboxed_code_may_use_threads() -> None:
    from recmas_graph.tools.sandbox import run_python

    result = run_python("import threading\nt = threading.Thread(target=print, args=('hi',))\nt.start(); t.join()",
                        timeout_s=10, memory_mb=512, cpu_s=5, max_output_chars=100)
    assert result.ok and result.stdout.strip() == "hi", result
