"""The commands: ``recmas serve`` as a process (health 503 while building, then answers; SIGTERM finishes
the running request, then exits; flag checks), and ``recmas mcp``: the official SDK's stdio client
starts it, lists the ``ask`` tool and gets the answer ``system.run`` gives; bad arguments come back as
tool errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

mcp = pytest.importorskip("mcp")

import recmas_graph as rg  # noqa: E402
from recmas_graph.cli import main  # noqa: E402

FLAGS = ["--models", "tiny", "--rounds", "1", "--latent-steps", "2", "--max-new-tokens", "8", "--greedy"]


def _error(result: Any) -> bool:
    return bool(getattr(result, "is_error", None) or getattr(result, "isError", None))  # mcp 2.x / 1.x


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def _session(calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[Any]]:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    env = {**os.environ, "RECMAS_DISABLE_PLUGINS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "recmas_graph", "mcp", "sequential_light",
                                                                 *FLAGS], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            results = [await session.call_tool(name, args) for name, args in calls]
    return [t.name for t in tools], results


def test_mcp_stdio_client_lists_the_tool_and_gets_an_answer() -> None:
    names, results = asyncio.run(asyncio.wait_for(_session([
        ("ask", {"question": "What is 2 + 3?"}),
        ("ask", {"question": "What is 2 + 3?", "rounds": 2}),
        ("ask", {"question": "What is 2 + 3?", "rounds": 0}),
    ]), timeout=240))
    assert names == ["ask"]
    system = rg.compile("sequential_light").build(models="tiny", seed=0)
    fast = dict(latent_steps=2, max_new_tokens=8, greedy=True)
    assert not _error(results[0]) and _text(results[0]) == system.run(["What is 2 + 3?"], rounds=1, **fast).answers[0]
    assert not _error(results[1]) and _text(results[1]) == system.run(["What is 2 + 3?"], rounds=2, **fast).answers[0]
    assert _error(results[2]) and "rounds" in _text(results[2])


@pytest.mark.parametrize("args, culprit", [
    (["serve", "sequential_light", "--models", "tiny", "--name", "a", "--name", "b"], "--name"),
    (["serve", "sequential_light", "mixture", "--models", "tiny", "--name", "x", "--name", "x"], "--name"),
    (["serve", "no_such_topology", "--models", "tiny"], "no_such_topology"),
    (["serve", "sequential_light", "--models", "huge"], "--models"),
    (["mcp", "sequential_light", "--ray-address", "auto"], "--ray-address"),
])
def test_serve_and_mcp_refuse_bad_flags_before_any_work(args: list[str], culprit: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert culprit in capsys.readouterr().err


def _get(url: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, None


def test_recmas_serve_process_builds_answers_and_stops_gracefully_on_sigterm() -> None:
    from recmas_graph.serve.server import free_port

    port = free_port()
    env = {**os.environ, "RECMAS_DISABLE_PLUGINS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "recmas_graph", "serve", "sequential_light", "--name", "seq",
                             "--port", str(port), "--log-level", "warning", *FLAGS], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        statuses = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            code, body = _get(url + "/health")
            if code:
                statuses.append(code)
            if code == 200:
                assert body == {"status": "ok", "models": ["seq"]}
                break
            time.sleep(0.05)
        assert statuses and statuses[-1] == 200, statuses
        question = {"model": "seq", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "temperature": 0}
        got: dict[str, Any] = {}
        asker = threading.Thread(target=lambda: got.update(zip(("code", "body"), _get(url + "/v1/chat/completions",
                                                                                      question))))
        asker.start()
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        asker.join(120)
        assert proc.wait(timeout=120) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has finished
        system = rg.compile("sequential_light").build(models="tiny", seed=0)
        alone = system.run(["What is 2 + 3?"], rounds=1, latent_steps=2, max_new_tokens=8, greedy=True).answers[0]
        assert got.get("code") == 200 and got["body"]["choices"][0]["message"]["content"] == alone, got
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
