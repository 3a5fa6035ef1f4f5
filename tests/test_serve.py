"""``recmas serve``: a real uvicorn server on 127.0.0.1 with a tiny-model system, called with the official
``openai`` client: completions, streaming, batching of concurrent requests, errors in OpenAI's shape,
the queue bound, the timeout, graceful shutdown and Prometheus metrics."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

import recmas_graph as rg  # noqa: E402
from recmas_graph.runtime.options import RunOptions  # noqa: E402
from recmas_graph.serve.app import create_app  # noqa: E402
from recmas_graph.serve.models import ServeSettings  # noqa: E402
from recmas_graph.serve.server import BackgroundServer  # noqa: E402

NAME = "tiny-seq"
DEFAULTS = RunOptions(rounds=1, latent_steps=2, max_new_tokens=8)
FAST = dict(rounds=1, latent_steps=2, max_new_tokens=8, greedy=True)
QUESTIONS = [f"What is {i} + {2 * i}? Answer briefly." + " Think." * (i % 5) for i in range(32)]


@pytest.fixture(scope="module")
def system() -> Any:
    return rg.compile("sequential_light").build(models="tiny", seed=0)


@pytest.fixture(scope="module")
def server(system: Any) -> Any:
    settings = ServeSettings(max_batch_size=8, batch_wait_ms=100, defaults=DEFAULTS)
    with BackgroundServer(create_app({NAME: system}, settings)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Any) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _alone(system: Any, question: Any, **more: Any) -> Any:
    return system.run([question], **{**FAST, **more})


def _http(url: str, body: Any = None, *, method: str | None = None, headers: dict[str, str] | None = None,
          raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# ------------------------------------------------------------------ the API with the openai client
def test_chat_completion_is_the_greedy_answer_with_usage(client: Any, system: Any) -> None:
    question = "What is 2 + 3?"
    reply = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": question}],
                                           temperature=0, max_tokens=8)
    alone = _alone(system, question)
    assert reply.object == "chat.completion" and reply.model == NAME
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == alone.answers[0]
    assert reply.choices[0].finish_reason == ("length" if alone.generated_tokens[0] >= 8 else "stop")
    usage = reply.usage
    assert usage.completion_tokens == alone.generated_tokens[0]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens and usage.prompt_tokens > 0
    assert usage.model_extra["latent_steps"] == alone.latent_steps > 0


def test_system_message_is_the_output_agents_system_prompt(client: Any, system: Any, server: Any) -> None:
    question, persona = "Name a prime.", "You answer in one word."
    reply = client.chat.completions.create(model=NAME, temperature=0, max_tokens=8,
                                           messages=[{"role": "system", "content": persona},
                                                     {"role": "user", "content": question}])
    alone = _alone(system, {"question": question, "output_system_prompt": persona})
    assert reply.choices[0].message.content == alone.answers[0]
    # the prompt the output agent saw has the persona; the other agents keep theirs
    from recmas_graph.runtime.agent.prompts import OUTPUT_SYSTEM_FIELD
    solver = system.agents[system.spec.output]
    assert persona in solver.prompter.render(question, "math", [], {}, fields={OUTPUT_SYSTEM_FIELD: persona})
    assert persona not in solver.prompter.render(question, "math", [], {})


def test_extra_fields_timings_seed_and_n(client: Any, system: Any) -> None:
    reply = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}], n=3, seed=11,
                                           max_tokens=6, temperature=0.9, top_p=0.9,
                                           extra_body={"rounds": 1, "latent_steps": 1, "task": "reasoning",
                                                       "timings": True})
    assert [c.index for c in reply.choices] == [0, 1, 2]
    alone = system.run(["Hi"] * 3, rounds=1, latent_steps=1, task="reasoning", max_new_tokens=6, temperature=0.9,
                       top_p=0.9, seeds=[11, 12, 13])
    assert [c.message.content for c in reply.choices] == alone.answers
    assert reply.usage.model_extra["latent_steps"] == 3 * alone.latent_steps
    timings = reply.model_extra["recmas"]["timings"]
    assert {row["agent"] for row in timings} == set(system.spec.agent_names)


def test_completions_models_and_health(client: Any, system: Any, server: Any) -> None:
    reply = client.completions.create(model=NAME, prompt=["What is 1 + 1?", "What is 2 + 2?"], max_tokens=8,
                                      temperature=0)
    assert reply.object == "text_completion"
    assert [c.text for c in reply.choices] == system.run(["What is 1 + 1?", "What is 2 + 2?"], **FAST).answers
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    status, _, body = _http(server.url + "/health")
    assert status == 200 and json.loads(body) == {"status": "ok", "models": [NAME]}


def test_streamed_chunks_join_to_the_greedy_answer(client: Any) -> None:
    messages = [{"role": "user", "content": "Count to five."}]
    whole = client.chat.completions.create(model=NAME, messages=messages, temperature=0, max_tokens=16)
    chunks = list(client.chat.completions.create(model=NAME, messages=messages, temperature=0, max_tokens=16,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1, "the answer should arrive in more than one chunk"
    assert "".join(pieces) == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_streamed_text_completion_and_done_marker(server: Any, client: Any) -> None:
    req = urllib.request.Request(server.url + "/v1/completions", method="POST",
                                 data=json.dumps({"model": NAME, "prompt": "Hi", "max_tokens": 8, "temperature": 0,
                                                  "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert text == client.completions.create(model=NAME, prompt="Hi", max_tokens=8, temperature=0).choices[0].text


# ------------------------------------------------------------------ batching
def test_concurrent_greedy_requests_are_batched_and_equal_to_each_alone(client: Any, system: Any,
                                                                         server: Any) -> None:
    def ask(question: str) -> str:
        reply = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": question}],
                                               temperature=0, max_tokens=8)
        return reply.choices[0].message.content

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, QUESTIONS))
    alone = [_alone(system, q).answers[0] for q in QUESTIONS]
    assert answers == alone
    metrics = _http(server.url + "/metrics")[2].decode()
    count = _metric(metrics, f'recmas_batch_size_count{{model="{NAME}"}}')
    ones = _metric(metrics, f'recmas_batch_size_bucket{{le="1.0",model="{NAME}"}}')
    assert count > ones, "some batch should hold more than one request"
    assert _metric(metrics, 'recmas_requests_total{endpoint="/v1/chat/completions",status="200"}') >= 32


def test_concurrent_sampled_requests_each_keep_their_own_seed(client: Any, system: Any) -> None:
    # tiny random models answer every question alike when greedy: seeds tell the rows apart
    def ask(i: int) -> str:
        reply = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": QUESTIONS[i]}],
                                               temperature=1.0, top_p=1.0, seed=1000 + i, max_tokens=8)
        return reply.choices[0].message.content

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, range(16)))
    alone = [system.run([QUESTIONS[i]], rounds=1, latent_steps=2, max_new_tokens=8, temperature=1.0, top_p=1.0,
                        seeds=[1000 + i]).answers[0] for i in range(16)]
    assert answers == alone and len(set(answers)) > 1


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics:\n{text}")


# ------------------------------------------------------------------ errors, in OpenAI's shape
@pytest.mark.parametrize("body, status, param", [
    ({"model": NAME}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ({"model": NAME, "messages": "hello"}, 400, "messages"),
    ({"model": NAME, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ({"model": NAME, "messages": [{"role": "system", "content": "x"}]}, 400, "messages"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "temperature": -1}, 400, "temperature"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "top_p": 0}, 400, "top_p"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "n": 0}, 400, "n"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "task": "poetry"}, 400, "task"),
    ({"model": NAME, "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, 400, "messages"),
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
])
def test_bad_requests_get_openai_errors_naming_the_field(server: Any, body: Any, status: int, param: str) -> None:
    code, _, raw = _http(server.url + "/v1/chat/completions", body)
    error = json.loads(raw)["error"]
    assert code == status, error
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["type"] == "invalid_request_error"
    if status == 404:
        assert NAME in error["message"] and error["code"] == "model_not_found"


def test_malformed_json_unknown_routes_and_the_server_keeps_serving(server: Any, client: Any) -> None:
    code, _, raw = _http(server.url + "/v1/chat/completions", raw=b'{"model": ')
    assert code == 400 and json.loads(raw)["error"]["code"] == "invalid_json"
    code, _, raw = _http(server.url + "/v1/nothing")
    assert code == 404 and "error" in json.loads(raw)
    code, _, raw = _http(server.url + "/v1/chat/completions", method="GET")
    assert code == 405 and "error" in json.loads(raw)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x"}], temperature=0,
                                          max_tokens=2).choices


def test_metrics_are_prometheus_text(server: Any, client: Any) -> None:
    client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "x"}], temperature=0,
                                   max_tokens=4)
    list(client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "y"}], temperature=0,
                                        max_tokens=4, stream=True))
    code, headers, raw = _http(server.url + "/metrics")
    text = raw.decode()
    assert code == 200 and headers["content-type"].startswith("text/plain")
    for name in ("recmas_requests_total", "recmas_request_latency_seconds_bucket",
                 "recmas_time_to_first_token_seconds_bucket", "recmas_batch_size_bucket", "recmas_queue_depth",
                 "recmas_generated_tokens_total", "recmas_latent_steps_total"):
        assert re.search(rf"^{name}\{{", text, re.M), name
    assert _metric(text, f'recmas_generated_tokens_total{{model="{NAME}"}}') > 0
    assert _metric(text, f'recmas_latent_steps_total{{model="{NAME}"}}') > 0


# ------------------------------------------------------------------ bounds: queue, timeout, shutdown, key
class _Slow:
    """A system whose runs take ``delay`` seconds more."""

    def __init__(self, system: Any, delay: float) -> None:
        self._system, self.delay = system, delay
        self.spec, self.agents = system.spec, system.agents

    def run(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay)
        return self._system.run(*args, **kwargs)


def test_full_queue_answers_429_with_retry_after_and_timeout_504(system: Any) -> None:
    settings = ServeSettings(max_batch_size=1, batch_wait_ms=0, max_queue=1, timeout_s=1.5, defaults=DEFAULTS)
    with BackgroundServer(create_app({NAME: _Slow(system, 1.0)}, settings)) as running:
        body = {"model": NAME, "messages": [{"role": "user", "content": "x"}], "temperature": 0, "max_tokens": 2}
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: _http(running.url + "/v1/chat/completions", body), range(4)))
    codes = sorted(r[0] for r in results)
    assert 429 in codes and 200 in codes, codes
    for code, headers, raw in results:
        if code == 429:
            assert int(headers["retry-after"]) >= 1 and json.loads(raw)["error"]["type"] == "rate_limit_error"
        if code == 504:
            assert json.loads(raw)["error"]["code"] == "timeout"
    assert set(codes) <= {200, 429, 504}


def test_timeout_answers_504(system: Any) -> None:
    settings = ServeSettings(timeout_s=0.3, defaults=DEFAULTS)
    with BackgroundServer(create_app({NAME: _Slow(system, 1.0)}, settings)) as running:
        code, _, raw = _http(running.url + "/v1/chat/completions",
                             {"model": NAME, "messages": [{"role": "user", "content": "x"}]})
        assert code == 504 and json.loads(raw)["error"]["code"] == "timeout"


def test_graceful_shutdown_finishes_running_requests(system: Any) -> None:
    running = BackgroundServer(create_app({NAME: _Slow(system, 1.0)}, ServeSettings(defaults=DEFAULTS))).start()
    body = {"model": NAME, "messages": [{"role": "user", "content": "x"}], "temperature": 0, "max_tokens": 2}
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_http, running.url + "/v1/chat/completions", body)
        time.sleep(0.3)
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        code, _, raw = pending.result(timeout=60)
        stopper.join(60)
    assert code == 200 and json.loads(raw)["choices"][0]["message"]["content"] == _alone(system, "x", max_new_tokens=2).answers[0]


def test_api_key_is_required_when_set(system: Any) -> None:
    settings = ServeSettings(api_key="s3cret", defaults=DEFAULTS)
    with BackgroundServer(create_app({NAME: system}, settings)) as running:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=running.url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=running.url + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list().data] == [NAME]
        assert _http(running.url + "/health")[0] == 200  # health needs no key


def test_health_is_503_until_the_systems_are_built(system: Any) -> None:
    app = create_app(None, ServeSettings(defaults=DEFAULTS))
    app.state.recmas.expected = [NAME]
    with BackgroundServer(app) as running:
        code, _, raw = _http(running.url + "/health")
        assert code == 503 and json.loads(raw)["status"] == "loading"
        code, headers, raw = _http(running.url + "/v1/chat/completions",
                                   {"model": NAME, "messages": [{"role": "user", "content": "x"}]})
        assert code == 503 and json.loads(raw)["error"]["code"] == "model_loading"
        app.state.recmas.add_all({NAME: system})
        assert _http(running.url + "/health")[0] == 200


def test_a_system_on_ray_serves_the_in_process_answers(system: Any) -> None:
    ray = pytest.importorskip("ray")
    from recmas_graph.distributed import build_on_ray, connect

    connect(num_cpus=2)
    try:
        on_ray = build_on_ray(rg.compile("sequential_light"), models="tiny", seed=0)
        try:
            with BackgroundServer(create_app({NAME: on_ray}, ServeSettings(defaults=DEFAULTS))) as running:
                client = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0, timeout=120)
                messages = [{"role": "user", "content": "Hi"}]
                whole = client.chat.completions.create(model=NAME, messages=messages, temperature=0)
                pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
                    model=NAME, messages=messages, temperature=0, stream=True) if c.choices and c.choices[0].delta.content]
            alone = _alone(system, "Hi").answers[0]
            assert whole.choices[0].message.content == alone and "".join(pieces) == alone  # streamed whole
        finally:
            on_ray.runner.shutdown()
    finally:
        ray.shutdown()


def test_run_on_text_pieces_join_to_each_answer(system: Any) -> None:
    got: dict[int, list[str]] = {}
    questions = ["What is 2 + 3?", "Hi", {"question": "Name a prime", "output_system_prompt": "Be terse."}]
    for stop in (None, ["O"]):
        got.clear()
        result = system.run(questions, rounds=1, latent_steps=2, max_new_tokens=16, temperature=1.0, seeds=[1, 2, 3],
                            stop=stop, on_text=lambda i, d: got.setdefault(i, []).append(d))
        assert ["".join(got.get(i, [])) for i in range(3)] == result.answers
        assert result.answers == system.run(questions, rounds=1, latent_steps=2, max_new_tokens=16, temperature=1.0,
                                            seeds=[1, 2, 3], stop=stop).answers
    assert max(len(v) for v in got.values()) > 1


def test_text_stream_holds_back_what_the_next_token_may_change() -> None:
    from recmas_graph.runtime.agent.decoding import TextStream

    class Bytes:  # a byte-level tokenizer: an incomplete UTF-8 character decodes to U+FFFD
        clean_up_tokenization_spaces = False

        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return bytes(ids).decode("utf-8", errors="replace")

    sent: list[str] = []
    stream = TextStream(Bytes(), 1, lambda row, delta: sent.append(delta))
    for b in "a€b".encode():
        stream.push([b], [True])
    stream.finish(["a€b"])
    assert sent == ["a", "€", "b"]


def test_a_client_that_leaves_before_its_batch_starts_is_dropped(system: Any) -> None:
    import socket

    slow = _Slow(system, 1.5)
    asked: list[int] = []
    run = slow.run
    slow.run = lambda questions, *a, **k: (asked.append(len(questions)), run(questions, *a, **k))[1]  # type: ignore[method-assign]
    settings = ServeSettings(max_batch_size=1, batch_wait_ms=0, defaults=DEFAULTS)
    with BackgroundServer(create_app({NAME: slow}, settings)) as running:
        body = {"model": NAME, "messages": [{"role": "user", "content": "x"}], "temperature": 0, "max_tokens": 2}
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(_http, running.url + "/v1/chat/completions", body)
            time.sleep(0.3)  # the first request's batch is running
            payload = json.dumps(body).encode()
            with socket.create_connection((running.host, running.port)) as sock:  # a second client, gone at once
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                time.sleep(0.3)
            assert first.result(timeout=60)[0] == 200
        time.sleep(2.0)
    assert asked == [1], asked
