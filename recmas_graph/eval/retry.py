"""The reference's answer retry: when an answer lacks its final format, ask once more, briefly.

The official evaluation retries every answer whose final format is missing, and its accuracies
include the retries: it appends a suffix to the raw answer (math: ``Final Answer: \\boxed{``; choice:
``Final Choice: \\boxed{``; code: a request for the final code and an opened code block) and lets
the answering model write up to 16 more tokens (code: 256) from that text alone, with no chat
template and no question. This module reproduces it; each record says whether it fired.

>>> needs_retry("so the answer is 12", "math"), needs_retry("\\\\boxed{12}", "math")
(True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .scoring import extract_choice, extract_code, last_boxed

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["RETRY_SUFFIX", "RETRY_TOKENS", "needs_retry", "retry_answers"]

#: What is appended (after a newline) to an answer that lacks its final format, per task type.
RETRY_SUFFIX: dict[str, str] = {
    "math": "Final Answer: \\boxed{",
    "reasoning": "Final Answer: \\boxed{",
    "choice": "Final Choice: \\boxed{",
    "code": "Your previous output format was invalid. Now output only final code and nothing else.\n"
            "Final Code:\n```python\n",
}
#: How many tokens the retry may write, per task type.
RETRY_TOKENS: dict[str, int] = {"math": 16, "reasoning": 16, "choice": 16, "code": 256}


def needs_retry(output: str, task: str, letters: str | None = None) -> bool:
    """Whether ``output`` lacks the final format of ``task`` (a box, a choice letter, a code block)."""
    if task == "code":
        return extract_code(output) is None
    if task == "choice":
        return extract_choice(output, letters) is None if letters else extract_choice(output) is None
    return last_boxed(output) is None


def retry_answers(system: RecursiveSystem, outputs: Sequence[str], task: str, *, generation: Any,
                  seeds: Sequence[int]) -> list[str]:
    """The retried answers: each ``output`` + newline + suffix + what the output agent writes next."""
    from ..runtime.agent.sampling import stream_id

    texts = [f"{out.rstrip()}\n{RETRY_SUFFIX.get(task, RETRY_SUFFIX['math'])}" for out in outputs]
    options = generation.replace(max_new_tokens=RETRY_TOKENS.get(task, 16), stop=())
    name = system.spec.output
    runner = system.runner
    if not hasattr(runner, "continue_texts"):  # a runner of its own that predates the retry hook
        from ..runtime.execution.backends import InProcessRunner

        runner = InProcessRunner(system)
    new = runner.continue_texts(name, texts, options, seeds=seeds, stream=stream_id(name, "retry"))
    return [t + n for t, n in zip(texts, new)]
