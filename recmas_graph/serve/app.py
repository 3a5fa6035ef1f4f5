"""The OpenAI-compatible HTTP API (FastAPI) over built systems: :func:`create_app`.

Routes: ``POST /v1/chat/completions`` (the last user message is the question; a system or developer
message is the output agent's system prompt), ``POST /v1/completions`` (each prompt is a question),
``GET /v1/models``, ``GET /v1/models/{model}``, ``GET /health`` and ``GET /metrics``. Requests run
through each system's :class:`~.batcher.Batcher`; ``stream: true`` sends server-sent events as the
output agent decodes (the rounds before it send nothing), then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .._version import __version__
from ..errors import RecmasError
from .batcher import Closed, Job, JobResult, QueueFull
from .errors import APIError, error_body, from_recmas, install_error_handlers
from .metrics import CONTENT_TYPE, ServeMetrics
from .models import ServedModel, ServeSettings, ServeState
from .schemas import (ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, ErrorResponse, Health,
                      ModelCard, ModelList)

__all__ = ["create_app", "ROUTES"]

_log = logging.getLogger("recmas_graph.serve")

#: The routes metrics are labelled with (any other path counts as ``other``).
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "Bad request: the error names the field."), (401, "Missing or wrong API key."),
        (404, "Unknown model (the error lists the served ones)."), (429, "Queue full: retry after Retry-After s."),
        (503, "Still building the systems, or shutting down."), (504, "Not answered within the server's timeout."))
}
#: Each server-sent event: ``data`` is a JSON chunk, an error object, or ``[DONE]`` (the last event).
_SSE = {"text/event-stream": {"schema": {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string", "description": "A JSON chat.completion.chunk (or text_completion) object, an "
             '{"error": ...} object, or [DONE].'},
    "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"}}}}}


def create_app(systems: Mapping[str, Any] | None = None, settings: ServeSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``systems`` (model name -> built system).

    Without ``systems`` the app starts not ready (``/health`` answers 503, generation requests 503):
    add them later with ``app.state.recmas.add_all(...)`` (``recmas serve`` builds them after the port
    is open).
    """
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    state = ServeState(settings, metrics)
    if systems is not None:
        state.add_all(systems)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.open()
        yield
        await state.close()  # uvicorn stopped accepting and waited for the open requests

    app = FastAPI(title="recmas serve", version=__version__, lifespan=lifespan,
                  description="RecursiveMAS systems behind the OpenAI API (docs/serving.md).")
    app.state.recmas = state
    install_error_handlers(app)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    async def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        if not secrets.compare_digest(header.encode(), f"Bearer {settings.api_key}".encode()):
            raise APIError(401, "a valid API key is needed: send 'Authorization: Bearer KEY' (the key the server "
                                "was started with, --api-key)", code="invalid_api_key")

    auth = [Depends(authorize)]

    @app.post("/v1/chat/completions", dependencies=auth, response_model=ChatCompletion,
              responses={**_ERRORS, 200: {"content": _SSE, "description": "A chat.completion, or with stream: "
                                          "true server-sent chat.completion.chunk events."}})
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        """Answer the last user message with a system (OpenAI chat completions)."""
        served = state.get(body.model)
        question, system_prompt = _conversation(body)
        options = served.options(body)
        generation = served.generation(options)
        prompt_tokens = served.count_tokens(question, system_prompt or "")
        served.check_context(prompt_tokens, generation.max_new_tokens, "messages")
        questions = [served.question(question, system_prompt)] * body.n
        call = _Call(served, body, request, questions, options, generation.max_new_tokens, prompt_tokens, "chat")
        if body.stream:
            return await call.stream()
        result = await call.result()
        choices = [{"index": i, "message": {"role": "assistant", "content": a}, "finish_reason": call.finish(n)}
                   for i, (a, n) in enumerate(zip(result.answers, result.generated_tokens))]
        return JSONResponse(call.response_body("chat.completion", choices, result))

    @app.post("/v1/completions", dependencies=auth, response_model=Completion,
              responses={**_ERRORS, 200: {"content": _SSE, "description": "A text_completion, or with stream: "
                                          "true server-sent text_completion events."}})
    async def completions(body: CompletionRequest, request: Request) -> Any:
        """Answer each prompt as a question (OpenAI completions)."""
        served = state.get(body.model)
        prompts = body.prompts()
        options = served.options(body)
        generation = served.generation(options)
        for i, prompt in enumerate(prompts):
            served.check_context(served.count_tokens(prompt), generation.max_new_tokens,
                                 "prompt" if len(prompts) == 1 else f"prompt[{i}]")
        prompt_tokens = served.count_tokens(*prompts)
        questions = [served.question(p, None) for p in prompts for _ in range(body.n)]
        call = _Call(served, body, request, questions, options, generation.max_new_tokens, prompt_tokens, "text")
        if body.stream:
            return await call.stream()
        result = await call.result()
        choices = [{"index": i, "text": a, "finish_reason": call.finish(n), "logprobs": None}
                   for i, (a, n) in enumerate(zip(result.answers, result.generated_tokens))]
        return JSONResponse(call.response_body("text_completion", choices, result))

    @app.get("/v1/models", dependencies=auth, response_model=ModelList)
    async def models() -> Any:
        """The served systems."""
        return {"object": "list", "data": [_card(m) for m in state.models.values()]}

    @app.get("/v1/models/{model}", dependencies=auth, response_model=ModelCard, responses={404: _ERRORS[404]})
    async def model(model: str) -> Any:
        """One served system."""
        return _card(state.get(model))

    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Still loading."}})
    async def health() -> Any:
        """``ok`` (200) when every system is built, else ``loading`` (503)."""
        names = sorted(state.models) if state.ready else sorted(set(state.expected) | set(state.models))
        return JSONResponse({"status": "ok" if state.ready else "loading", "models": names},
                            status_code=200 if state.ready else 503)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}})
    async def prometheus() -> Response:
        """Prometheus metrics (text format)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The OpenAPI schema, the served model names listed as the values of ``model``."""
        if app.openapi_schema is not None:
            return app.openapi_schema
        found = default_openapi()
        app.openapi_schema = None  # the names are known once the systems are built
        if state.ready and state.models:
            names = sorted(state.models)
            for component in ("ChatCompletionRequest", "CompletionRequest"):
                prop = found.get("components", {}).get("schemas", {}).get(component, {}).get("properties", {})
                if "model" in prop:
                    prop["model"]["enum"] = names
            for param in found.get("paths", {}).get("/v1/models/{model}", {}).get("get", {}).get("parameters", []):
                if param.get("name") == "model":
                    param["schema"]["enum"] = names
            app.openapi_schema = found
        return found

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _card(served: ServedModel) -> dict[str, Any]:
    return {"id": served.name, "object": "model", "created": served.created, "owned_by": "recmas"}


def _conversation(body: ChatCompletionRequest) -> tuple[str, str | None]:
    """The question (the last user message) and the output agent's system prompt (system and developer
    messages joined), or ``None``."""
    users = [m for m in body.messages if m.role == "user"]
    if not users:
        raise APIError(400, "no user message: the last user message is the question (fix: add "
                            '{"role": "user", "content": "..."})', param="messages", code="missing_user_message")
    question = users[-1].text()
    if not question.strip():
        index = max(i for i, m in enumerate(body.messages) if m.role == "user")
        raise APIError(400, "the last user message is empty: it is the question", param=f"messages[{index}].content",
                       code="invalid_value")
    system = "\n\n".join(m.text() for m in body.messages if m.role in ("system", "developer") and m.text())
    return question, system or None


class _Call:
    """One generation request on its way through the batcher: waiting, streaming, building the body."""

    def __init__(self, served: ServedModel, body: Any, request: Request, questions: list[Any], options: Any,
                 max_new_tokens: int, prompt_tokens: int, kind: str) -> None:
        self.served, self.body, self.request, self.kind = served, body, request, kind
        self.max_new_tokens, self.prompt_tokens = max_new_tokens, prompt_tokens
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        self.job = Job(questions, [seed + i for i in range(len(questions))], options)

    def submit(self) -> asyncio.Future[JobResult]:
        """Queue the job (429 when the queue is full, 503 when shutting down)."""
        try:
            return self.served.batcher.submit(self.job)
        except QueueFull as err:
            raise APIError(429, f"too many requests waiting for {self.served.name!r}; retry after "
                                f"{err.retry_after} s", code="queue_full",
                           headers={"Retry-After": str(err.retry_after)}) from None
        except Closed:
            raise APIError(503, "the server is shutting down", code="shutting_down") from None

    async def wait(self, future: asyncio.Future[JobResult], *, watch: bool = True) -> JobResult:
        """The job's result; 504 past the server's timeout; a client that leaves drops the job."""
        deadline = self.job.arrived + self.served.settings.timeout_s
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                self.job.cancel()
                self.served.metrics.rejected.labels(self.served.name, "timeout").inc()
                raise APIError(504, f"not answered within the server's timeout ({self.served.settings.timeout_s:g} s)",
                               code="timeout")
            done, _ = await asyncio.wait({future}, timeout=min(0.25, remaining))
            if done:
                try:
                    return future.result()
                except RecmasError as err:
                    raise from_recmas(err) from None
            if watch and await self.request.is_disconnected():
                self.job.cancel()
                raise APIError(499, "the client closed the request", code="client_closed")

    async def result(self) -> JobResult:
        """Submit and wait."""
        return await self.wait(self.submit())

    def finish(self, tokens: int) -> str:
        """``length`` when an answer used its whole token budget, else ``stop``."""
        return "length" if tokens >= self.max_new_tokens else "stop"

    def usage(self, result: JobResult) -> dict[str, Any]:
        """The request's usage: answer tokens, latent steps and text-message tokens of its rows."""
        completion = sum(result.generated_tokens)
        rows = len(result.answers)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion, "latent_steps": result.latent_steps * rows,
                "message_tokens": max(0, sum(result.question_tokens) - completion)}

    def extra(self, result: JobResult) -> dict[str, Any] | None:
        """The ``recmas`` field: the batch's per-agent timings, when asked."""
        if not self.body.timings:
            return None
        return {"timings": result.trace, "batch_rows": result.batch_rows, "batch_wall_s": round(result.wall_s, 6)}

    def response_body(self, kind: str, choices: list[dict[str, Any]], result: JobResult) -> dict[str, Any]:
        """A complete response body."""
        out = {"id": self.id, "object": kind, "created": self.created, "model": self.served.name, "choices": choices,
               "usage": self.usage(result)}
        extra = self.extra(result)
        if extra is not None:
            out["recmas"] = extra
        return out

    # ------------------------------------------------------------------ streaming
    def _event(self, choices: list[dict[str, Any]], **more: Any) -> str:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        data = {"id": self.id, "object": obj, "created": self.created, "model": self.served.name, "choices": choices,
                **more}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    def _piece(self, index: int, text: str | None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
        if self.kind == "text":
            return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

    async def stream(self) -> StreamingResponse:
        """Submit, then answer with server-sent events as the output agent decodes."""
        pieces: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self.job.on_text = lambda row, delta: pieces.put_nowait((row, delta))
        future = self.submit()  # 429 / 503 before any event is sent
        rows = len(self.job.questions)

        async def events() -> AsyncIterator[str]:
            sent = [""] * rows
            waiter: asyncio.Future[JobResult] | None = None
            try:
                if self.kind == "chat":
                    yield self._event([self._piece(i, "", role=True) for i in range(rows)])
                waiter = asyncio.ensure_future(self.wait(future, watch=False))
                while True:
                    getter = asyncio.ensure_future(pieces.get())
                    done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        row, delta = getter.result()
                        sent[row] += delta
                        yield self._event([self._piece(row, delta)])
                        continue
                    getter.cancel()
                    break
                while not pieces.empty():
                    row, delta = pieces.get_nowait()
                    sent[row] += delta
                    yield self._event([self._piece(row, delta)])
                try:
                    result = waiter.result()
                except Exception as err:  # noqa: BLE001 - the stream has started: the error is its last event
                    if not isinstance(err, APIError):
                        _log.exception("unexpected error while streaming")
                        err = APIError(500, f"internal error ({type(err).__name__})", code="internal_error")
                    yield f"data: {json.dumps(error_body(err.message, type=err.type, param=err.param, code=err.code))}\n\n"
                    yield "data: [DONE]\n\n"
                    return
                for i, (answer, tokens) in enumerate(zip(result.answers, result.generated_tokens)):
                    rest = answer[len(sent[i]):] if answer.startswith(sent[i]) else ""  # a runner that cannot stream
                    if rest:
                        yield self._event([self._piece(i, rest)])
                    yield self._event([self._piece(i, None if self.kind == "chat" else "", self.finish(tokens))])
                if self.body.include_usage():
                    yield self._event([], usage=self.usage(result))
                yield "data: [DONE]\n\n"
            finally:
                if not future.done():
                    self.job.cancel()
                if waiter is not None and not waiter.done():
                    waiter.cancel()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _MetricsMiddleware:
    """Counts every request by route and status, and times it to the last byte of its body (ASGI)."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = "/v1/models" if path.startswith("/v1/models") else path if path in ROUTES else "other"
        start = time.perf_counter()
        status = {"code": 500}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.requests.labels(endpoint, str(status["code"])).inc()
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

        await self.app(scope, receive, sending)
