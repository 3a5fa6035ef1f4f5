"""Scoring: answer extraction and scoring (boxed math answers, numbers, choice letters, code tests).

Every metric is a :class:`Metric` registered through the ``recmas_metrics`` hook; the built-ins are:

- ``boxed_math``: the last complete ``\\boxed{...}`` of the output, compared to the gold answer by
  ``math-verify`` (symbolic and numeric equivalence: ``\\dfrac`` and ``\\frac``, ``\\sqrt{27}`` and
  ``3\\sqrt{3}``, ``1,000`` and ``1000``, units and ``x =``), with a timeout per call. No box: no
  prediction, incorrect. There is deliberately no lenient "integer part" rule: ``7.5`` is not ``7``.
- ``gsm8k_number``: the last ``\\boxed{}``, else the last number of the output, equal to the gold
  number (``math-verify``).
- ``choice_letter``: a letter A-J (the sample's own letters) from the last ``\\boxed{}`` or from "the answer is X"; when no
  letter is found the output is incorrect (no default letter).
- ``code_tests``: the last fenced Python block, run with the gold test program in the sandbox
  (:func:`recmas_graph.tools.sandbox.run_python`); correct when it exits cleanly. A HumanEval-style
  sample's ``meta["prompt"]`` (its imports and signature) runs first, so a solution may use them.
  The sandbox's boundary follows ``RECMAS_SANDBOX`` (``auto``, ``strict``, ``audit``; see
  ``docs/sandbox.md``); when it cannot run at all (``strict`` without bubblewrap) scoring raises
  :class:`~recmas_graph.errors.RunError` instead of marking every sample incorrect.

>>> METRICS["boxed_math"].score(r"so the answer is \\boxed{\\frac{1}{2}}.", "0.5").correct
True
>>> METRICS["gsm8k_number"].score("She pays 1,200 dollars in total.", "1200").prediction
'1,200'

>>> METRICS["choice_letter"].score("I am not sure.", "A").correct
False
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Seconds each math-verify parse and comparison may take.
MATH_TIMEOUT_S = 5

__all__ = [
    "Score",
    "Metric",
    "METRICS",
    "DEFAULT_METRIC_FOR_TASK",
    "last_boxed",
    "math_equal",
    "MATH_TIMEOUT_S",
    "extract_choice",
    "CHOICE_LETTERS",
    "extract_code",
    "score_boxed_math",
    "score_gsm8k_number",
    "score_choice_letter",
    "score_code_tests",
    "get_metric",
]


@dataclass(frozen=True)
class Score:
    """The verdict on one output: correct or not, the extracted answer (``None``: none found), a note,
    and graded ``values`` besides (e.g. ``{"em": 1.0, "f1": 0.8}``, ``{"pass_rate": 0.75}``: a record's
    ``scores``, averaged in the summary's ``metrics``)."""

    correct: bool
    prediction: str | None
    detail: str = ""
    values: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A named scoring function ``fn(output, gold, meta) -> Score``.

    ``tasks`` lists the task types it suits (math, choice, code, reasoning).
    """

    name: str
    description: str
    fn: Callable[[str, str, Mapping[str, Any]], Score]
    tasks: tuple[str, ...] = ()

    def score(self, output: str, gold: str, meta: Mapping[str, Any] | None = None) -> Score:
        """Score one model output against the gold answer (``meta``: the sample's extra fields)."""
        return self.fn(output, gold, meta or {})


# --------------------------------------------------------------------------- extraction


def _balanced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start] == "{"`` and the index after it."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


_BOX_RE = re.compile(r"\\(?:boxed|fbox)")


def last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced.

    A box cut off before its closing brace is skipped (the previous complete one counts);
    ``\\boxed 5`` (no braces) gives ``5``.

    >>> last_boxed(r"\\boxed{1} then \\boxed{\\frac{a}{b}}")
    '\\\\frac{a}{b}'
    >>> last_boxed(r"\\boxed{2} and \\boxed{3")
    '2'
    >>> print(last_boxed("no box"))
    None
    """
    for match in reversed(list(_BOX_RE.finditer(text))):
        pos = match.end()
        if pos < len(text) and text[pos].isalpha():  # e.g. \boxedfoo: another macro
            continue
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos < len(text) and text[pos] == "{":
            found = _balanced(text, pos)
            if found is not None:
                return found[0]
            continue
        bare = re.match(r"([^\s$]+)", text[pos:])
        if bare and pos > match.end():
            return bare.group(1)
    return None


def _unwrap_macro(text: str, macro: str) -> str:
    """Replace ``\\macro{X}`` by ``X`` (balanced braces)."""
    needle = "\\" + macro + "{"
    while True:
        i = text.find(needle)
        if i < 0:
            return text
        found = _balanced(text, i + len(needle) - 1)
        if found is None:
            return text
        content, end = found
        text = text[:i] + content + text[end:]


def _verify_tools() -> tuple[Any, Any, Any]:
    try:
        from math_verify import parse, verify
        from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig
    except ImportError as err:  # pragma: no cover - exercised when the extra is absent
        raise ImportError("math scoring needs the math-verify package: pip install 'recmas-graph[eval]'") from err
    configs = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=True),
               ExprExtractionConfig(try_extract_without_anchor=True)]
    return parse, verify, configs


def math_equal(prediction: str, gold: str, *, timeout_s: int = MATH_TIMEOUT_S) -> bool:
    """Whether two math answers are equal, by ``math-verify`` (symbolic and numeric equivalence).

    Both are read as the content of a ``\\boxed{}``; each parse and the comparison have a timeout.
    There is deliberately no lenient "integer part" rule: ``7.5`` is not ``7``.

    >>> math_equal(r"\\dfrac{1}{2}", "0.5"), math_equal(r"\\sqrt{27}", r"3\\sqrt{3}"), math_equal("7.5", "7")
    (True, True, False)
    """
    prediction = prediction.strip().rstrip(".").strip()  # "18." is 18: a sentence's full stop inside the box
    if not prediction or not gold.strip():
        return False
    parse, verify, configs = _verify_tools()
    # math-verify's timeouts use SIGALRM, which exists only in the main thread: elsewhere, no timeout
    limit = timeout_s if threading.current_thread() is threading.main_thread() else None
    gold_parsed = parse(f"\\boxed{{{gold}}}", configs, parsing_timeout=limit)
    pred_parsed = parse(f"\\boxed{{{prediction}}}", configs, parsing_timeout=limit)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=limit))


# "answer is X", "Answer: X", "**Answer:** **X**", "the correct option is (X)", "choose X"; a bare
# "option X" is not an answer ("The answer is C because option D is wrong" answers C).
_ANSWER_IS_RE = re.compile(
    r"(?i:answer(?:\s+is)?|correct\s+(?:option|choice)(?:\s+is)?|\bchoose)[\s*_]*[:：]?[\s*_]*"
    r"(?i:option\s*)?[\(\[]?([A-J])[\)\]]?(?![A-Za-z0-9])"
)


CHOICE_LETTERS = "ABCDEFGHIJ"
# An output that opens with an option label: "B. text", "(C)", "D)", "**A**", a lone "E".
_LEADING_LABEL_RE = re.compile(r"\s*[*_]*[\(\[]?([A-J])(?:[\)\].:]|[*_]+|[ \t]*(?:\n|$))")


def extract_choice(text: str, letters: str = CHOICE_LETTERS) -> str | None:
    """The chosen letter: from the last ``\\boxed{}`` when it holds a letter, else the last "answer is X",
    else an output that opens with an option label ("B. breathing mask", "(C)", "D").

    No letter found gives ``None`` (never a default).

    >>> extract_choice(r"... so \\boxed{(C)}"), extract_choice("The answer is B."), extract_choice("hmm")
    ('C', 'B', None)
    >>> extract_choice(r"\\boxed{H}"), extract_choice("the answer is J"), extract_choice(r"\\boxed{H}", "ABCD")
    ('H', 'J', None)
    >>> extract_choice("B. breathing mask"), extract_choice("**(C)** because"), extract_choice("A big dog")
    ('B', 'C', None)
    >>> extract_choice("I think C"), extract_choice("D"), extract_choice("**E**: yes")
    (None, 'D', 'E')
    """
    boxed = last_boxed(text)
    if boxed is not None:
        content = _unwrap_macro(_unwrap_macro(boxed, "text"), "textbf").strip().strip("$ ")
        m = re.fullmatch(r"[\(\[]?([A-Ja-j])[\)\]]?\.?", content) or re.fullmatch(
            r"[\(\[]?([A-J])[\)\].:]\s.*", content, flags=re.S)
        if m and m.group(1).upper() in letters:
            return m.group(1).upper()
    matches = [m.group(1) for m in _ANSWER_IS_RE.finditer(text) if m.group(1) in letters]
    if matches:
        return matches[-1]
    m = _LEADING_LABEL_RE.match(text)
    return m.group(1) if m and m.group(1) in letters else None


_FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[ \t]*$")
_PYTHON_TAGS = {"", "python", "py", "python3"}


def extract_code(text: str) -> str | None:
    """The last complete fenced code block (```python ... ```, or a bare fence), without the fences.

    A fence with a language tag always opens a block (a closing fence has none), so a block cut
    off by the token limit and followed by a fresh one (the retry) does not swallow it.

    >>> extract_code("```python\\nx = 1\\n```"), extract_code("```python\\ncut off\\n```Python\\ny = 2\\n```")
    ('x = 1\\n', 'y = 2\\n')
    """
    blocks: list[str] = []
    current: list[str] | None = None
    tag = ""
    for line in text.splitlines(keepends=True):
        fence = _FENCE_RE.match(line.rstrip("\n"))
        if fence is None:
            if current is not None:
                current.append(line)
        elif current is None or fence.group(1):  # opens (a tagged fence always opens a new block)
            current, tag = [], fence.group(1).lower()
        else:  # closes
            if tag in _PYTHON_TAGS:
                blocks.append("".join(current))
            current = None
    return blocks[-1] if blocks else None


# --------------------------------------------------------------------------- metrics


def score_boxed_math(output: str, gold: str, meta: Mapping[str, Any]) -> Score:
    """``boxed_math``: the last complete ``\\boxed{}`` against ``gold`` (``math-verify``)."""
    pred = last_boxed(output)
    if pred is None:
        return Score(False, None, "no \\boxed{} answer found")
    return Score(math_equal(pred, gold), pred, "boxed")


# 1,234 (thousands) is one number, "20,30,40" three; the minus of "10-5" is not a sign.
_NUMBER_RE = re.compile(r"(?<![\w)])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def score_gsm8k_number(output: str, gold: str, meta: Mapping[str, Any]) -> Score:
    """``gsm8k_number``: the last ``\\boxed{}``, else the last number in the output, against ``gold``."""
    pred = last_boxed(output)
    how = "boxed"
    if pred is None:
        numbers = _NUMBER_RE.findall(output)
        if not numbers:
            return Score(False, None, "no number found")
        pred, how = numbers[-1].rstrip(","), "last number"
    return Score(math_equal(pred, gold), pred, how)


def score_choice_letter(output: str, gold: str, meta: Mapping[str, Any]) -> Score:
    """``choice_letter``: the extracted letter equals the gold letter (no letter: incorrect)."""
    letters = str(meta.get("letters") or CHOICE_LETTERS)
    pred = extract_choice(output, letters)
    if pred is None:
        return Score(False, None, "no answer letter found")
    return Score(pred == gold.strip().upper(), pred)


def score_code_tests(output: str, gold: str, meta: Mapping[str, Any]) -> Score:
    """``code_tests``: the last fenced code block plus the gold test program run in the sandbox."""
    from ..tools.sandbox import run_python

    code = extract_code(output)
    if code is None:
        return Score(False, None, "no fenced code block found")
    prefix = str(meta.get("prompt") or "")  # HumanEval: the prompt's imports and signature come first
    program = f"{prefix.rstrip()}\n\n{code}\n\n{gold}\n" if prefix else f"{code}\n\n{gold}\n"
    result = run_python(program, timeout_s=float(meta.get("timeout_s", 10.0)), memory_mb=int(meta.get("memory_mb", 1024)))
    if result.reason == "unsupported":  # no sample could pass: say so rather than score them all wrong
        from ..errors import RunError

        raise RunError(result.stderr.strip(), culprit="code_tests",
                       hint="install bubblewrap, or set RECMAS_SANDBOX=auto or audit (see docs/sandbox.md)")
    detail = "" if result.ok else (result.reason + ": " + result.stderr.strip().splitlines()[-1:][0]
                                   if result.stderr.strip() else result.reason)
    return Score(result.ok, code, detail)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("boxed_math", "last \\boxed{} vs gold by math-verify (symbolic and numeric equivalence)",
               score_boxed_math, ("math", "reasoning")),
        Metric("gsm8k_number", "last \\boxed{}, else the last number, vs the gold number (math-verify)",
               score_gsm8k_number, ("math",)),
        Metric("choice_letter", "letter A-J from the last \\boxed{} or 'the answer is X'; none found: incorrect",
               score_choice_letter, ("choice",)),
        Metric("code_tests", "last fenced Python block + the gold tests, run in the sandbox; passes: correct",
               score_code_tests, ("code",)),
    )
}

#: The metric used for a task type when a dataset names none.
DEFAULT_METRIC_FOR_TASK: dict[str, str] = {
    "math": "boxed_math",
    "reasoning": "boxed_math",
    "choice": "choice_letter",
    "code": "code_tests",
}


def get_metric(name: str, registry: Any) -> Metric:
    """The metric ``name`` registered in ``registry``."""
    from ..errors import RecmasError

    metric = registry.metrics.get(name)
    if metric is None:
        raise RecmasError(f"unknown metric {name!r}", culprit="metric",
                          hint=f"use one of: {', '.join(sorted(registry.metrics))}")
    return metric
