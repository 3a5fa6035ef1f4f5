"""The request and response bodies of the OpenAI-compatible API (pydantic), as the OpenAI API shapes them.

Requests take OpenAI's fields (``model``, ``messages`` / ``prompt``, ``max_tokens``, ``temperature``,
``top_p``, ``seed``, ``stop``, ``n``, ``stream``) and RecursiveMAS's own as extra body fields
(``rounds``, ``latent_steps``, ``task``, ``timings``). Other OpenAI fields a client may send
(``user``, ``frequency_penalty``...) are accepted and ignored, as OpenAI-compatible servers do;
``logprobs`` and tool calling are refused with a message. Responses are ``chat.completion``,
``chat.completion.chunk``, ``text_completion`` and ``list`` objects; ``usage`` adds ``latent_steps``.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..topology.spec import TASK_TYPES

__all__ = ["ChatMessage", "TextPart", "ChatCompletionRequest", "CompletionRequest", "Usage", "ChatChoice",
           "AssistantMessage", "ChatCompletion", "ChunkDelta", "ChunkChoice", "ChatCompletionChunk", "TextChoice",
           "Completion", "ModelCard", "ModelList", "ErrorBody", "ErrorResponse", "Health", "MAX_N", "MAX_STOPS"]

#: At most this many choices per request (``n``) and stop strings (``stop``), as OpenAI allows.
MAX_N = 16
MAX_STOPS = 4


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Body):
    """A text part of a message's content (``{"type": "text", "text": ...}``)."""

    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    """One message of a conversation. ``content`` is a string or a list of text parts."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    name: str | None = None

    def text(self) -> str:
        """The message's text (its parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _Sampling(_Body):
    """The fields every generation request shares."""

    model: str = Field(description="A served system's name (GET /v1/models).")
    max_tokens: int | None = Field(None, ge=1, description="Answer length limit in tokens (default: the server's).")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature; 0 decodes greedily.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling threshold.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Seed of the sampling: choice i uses seed + i "
                             "(default: a random seed per request).")
    stop: Union[str, list[str], None] = Field(None, description=f"Up to {MAX_STOPS} stop strings; the answer ends "
                                              "right after the first.")
    n: int = Field(1, ge=1, le=MAX_N, description="Choices to generate.")
    stream: bool = Field(False, description="Send server-sent events as the output agent decodes.")
    stream_options: dict[str, Any] | None = Field(None, description='{"include_usage": true} adds a last chunk '
                                                  "with the usage.")
    rounds: int | None = Field(None, ge=1, le=64, description="RecursiveMAS: recursion rounds (default: the "
                               "topology's).")
    latent_steps: int | None = Field(None, ge=0, le=4096, description="RecursiveMAS: latent steps per pass "
                                     "(default: the topology's settings).")
    task: Literal[TASK_TYPES] | None = Field(None, description="RecursiveMAS: task type, picks the prompts "  # type: ignore[valid-type]
                                             "(default: the server's).")
    timings: bool = Field(False, description="RecursiveMAS: add the per-agent timings of the batch the request "
                          "ran in (response field recmas.timings).")
    logprobs: bool | None = Field(None, description="Not supported: must be absent or false.")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Union[str, list[str], None]) -> Union[str, list[str], None]:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("logprobs are not supported by this server")
        return value

    def stops(self) -> tuple[str, ...] | None:
        """The stop strings as a tuple (``None``: not given)."""
        if self.stop is None:
            return None
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop) or None

    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool((self.stream_options or {}).get("include_usage"))


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``: the last user message is the question; a system (or developer)
    message is the output agent's system prompt."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation; its last user message is "
                                        "the question.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Same as max_tokens (the newer name).")
    tools: list[Any] | None = Field(None, description="Not supported: must be absent or empty.")

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tool calling is not supported by this server (the system's own agents may call tools)")
        return value


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: the prompt (or each prompt of a list) is a question."""

    prompt: Union[str, list[str]] = Field(description="The question, or a list of questions.")
    echo: bool = Field(False, description="Not supported: must be false.")

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: Union[str, list[str]]) -> Union[str, list[str]]:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one prompt")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported by this server")
        return value

    def prompts(self) -> list[str]:
        """The prompts as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class Usage(BaseModel):
    """Tokens of a request: ``completion_tokens`` are the answers' generated tokens, ``latent_steps`` the
    latent steps run for it (every pass of every round), ``message_tokens`` the text messages' tokens."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    latent_steps: int = 0
    message_tokens: int = 0


class AssistantMessage(BaseModel):
    """The answer."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One choice of a chat completion."""

    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A ``chat.completion`` object (``recmas`` carries the timings when asked)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    recmas: dict[str, Any] | None = None


class ChunkDelta(BaseModel):
    """What a chunk adds to a choice."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """One choice's part of a chunk."""

    index: int
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """A ``chat.completion.chunk`` server-sent event."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class TextChoice(BaseModel):
    """One choice of a text completion."""

    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class Completion(BaseModel):
    """A ``text_completion`` object (also each streamed event of ``/v1/completions``)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None
    recmas: dict[str, Any] | None = None


class ModelCard(BaseModel):
    """A served system (``GET /v1/models``)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "recmas"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    """An error as OpenAI shapes it: what went wrong, its type, the request field at fault, a code."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """``{"error": {...}}``."""

    error: ErrorBody


class Health(BaseModel):
    """``GET /health``: ``ok`` when every system is built (HTTP 200), else ``loading`` (HTTP 503)."""

    status: Literal["ok", "loading"]
    models: list[str]
