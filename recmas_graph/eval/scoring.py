"""Scoring: answer extraction and scoring (boxed math answers, choice letters, code tests).

Every metric is a :class:`Metric` registered through the ``recmas_metrics`` hook; the built-ins are:

- ``boxed_math``: the last complete ``\\boxed{...}`` of the output, compared to the gold answer after
  math normalisation (spaces, ``\\left``/``\\right``, ``\\text{}``, dollars, a trailing period,
  ``\\frac{a}{b}`` vs ``a/b``, thousands separators, trailing units such as ``\\text{ cm}``,
  degrees and percent signs, ``x = `` before the value) and by exact numeric value (``7 == 7.0``,
  ``1/2 == 0.5``). There is deliberately no lenient "integer part" rule: ``7.5`` is not ``7``.
- ``choice_letter``: a letter A-J (the sample's own letters) from the last ``\\boxed{}`` or from "the answer is X"; when no
  letter is found the output is incorrect (no default letter).
- ``code_tests``: the last fenced Python block, run with the gold test program in the sandbox
  (:func:`recmas_graph.tools.sandbox.run_python`); correct when it exits cleanly. A HumanEval-style
  sample's ``meta["prompt"]`` (its imports and signature) runs first, so a solution may use them.

>>> METRICS["boxed_math"].score(r"so the answer is \\boxed{\\frac{1}{2}}.", "0.5").correct
True
>>> METRICS["choice_letter"].score("I am not sure.", "A").correct
False
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = [
    "Score",
    "Metric",
    "METRICS",
    "DEFAULT_METRIC_FOR_TASK",
    "last_boxed",
    "normalize_math",
    "math_equal",
    "extract_choice",
    "CHOICE_LETTERS",
    "extract_code",
    "score_boxed_math",
    "score_choice_letter",
    "score_code_tests",
    "get_metric",
]


@dataclass(frozen=True)
class Score:
    """The verdict on one output: correct or not, the extracted answer (``None``: none found), a note."""

    correct: bool
    prediction: str | None
    detail: str = ""


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


def _convert_fracs(text: str) -> str:
    r"""``\frac{a}{b}`` -> ``a/b`` (``(a)/(b)`` when a part is not a single term); ``\frac12`` too."""
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", text)
    text = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", text)
    while True:
        i = text.rfind("\\frac{")  # innermost last: its arguments contain no further \frac
        if i < 0:
            return text
        num = _balanced(text, i + 5)
        if num is None or num[1] >= len(text) or text[num[1]] != "{":
            return text
        den = _balanced(text, num[1])
        if den is None:
            return text
        a, b = num[0], den[0]
        simple = re.compile(r"^-?[\w.\\]+$")
        a_txt = a if simple.match(a) else f"({a})"
        b_txt = b if simple.match(b) else f"({b})"
        text = text[:i] + f"{a_txt}/{b_txt}" + text[den[1]:]


def normalize_math(answer: str) -> str:
    r"""Canonical text of a math answer for string comparison.

    >>> normalize_math(r"$\left( 3, \frac{\pi}{2} \right)$.")
    '(3,\\pi/2)'
    >>> normalize_math(r"\text{(C)}"), normalize_math("1,000"), normalize_math("x = 5")
    ('(C)', '1000', '5')
    """
    s = answer.strip()
    s = s.replace("\\$", "").replace("$", "")
    # units written as a trailing "\text{ cm}" / "\mbox{ inches}^2" (content starting with a space)
    s = re.sub(r"\\(?:text|mbox)\{\s[^{}]*\}(\^\{?\d\}?)?\s*$", "", s)
    for macro in ("text", "textbf", "mathrm", "mathbf", "mbox"):
        s = _unwrap_macro(s, macro)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for latex_space in ("\\!", "\\,", "\\;", "\\:", "\\ ", "~"):
        s = s.replace(latex_space, "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    s = _convert_fracs(s)
    eq = re.match(r"^[A-Za-z]=(.+)$", s)
    if eq:
        s = eq.group(1)
    while s.startswith("{") and s.endswith("}") and _balanced(s, 0) == (s[1:-1], len(s)):
        s = s[1:-1]
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s


def _number(s: str) -> Fraction | None:
    """Exact value of a normalised numeric answer (integer, decimal, ``a/b``, ``(a)/(b)``), else None."""
    m = re.fullmatch(r"\(?(-?[\d.]+)\)?/\(?(-?[\d.]+)\)?", s)
    try:
        if m:
            den = Fraction(m.group(2))
            return Fraction(m.group(1)) / den if den != 0 else None
        if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", s):
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def math_equal(prediction: str, gold: str) -> bool:
    """Whether two math answers are equal after normalisation, or have the same exact numeric value.

    >>> math_equal("7.0", "7"), math_equal(r"\\frac{3}{4}", "3/4"), math_equal("7.5", "7")
    (True, True, False)
    """
    a, b = normalize_math(prediction), normalize_math(gold)
    if a == b:
        return True
    na, nb = _number(a), _number(b)
    return na is not None and nb is not None and na == nb


_ANSWER_IS_RE = re.compile(
    r"(?i:answer(?:\s+is)?|option(?:\s+is)?)\s*[:：]?\s*(?i:option\s*)?[\(\[]?([A-J])[\)\]]?(?![A-Za-z0-9])"
)


CHOICE_LETTERS = "ABCDEFGHIJ"


def extract_choice(text: str, letters: str = CHOICE_LETTERS) -> str | None:
    """The chosen letter: from the last ``\\boxed{}`` when it holds a letter, else the last "answer is X".

    No letter found gives ``None`` (never a default).

    >>> extract_choice(r"... so \\boxed{(C)}"), extract_choice("The answer is B."), extract_choice("hmm")
    ('C', 'B', None)
    >>> extract_choice(r"\\boxed{H}"), extract_choice("the answer is J"), extract_choice(r"\\boxed{H}", "ABCD")
    ('H', 'J', None)
    """
    boxed = last_boxed(text)
    if boxed is not None:
        content = _unwrap_macro(_unwrap_macro(boxed, "text"), "textbf").strip().strip("$ ")
        m = re.fullmatch(r"[\(\[]?([A-Ja-j])[\)\]]?\.?", content) or re.fullmatch(
            r"[\(\[]?([A-J])[\)\].:]\s.*", content, flags=re.S)
        if m and m.group(1).upper() in letters:
            return m.group(1).upper()
    matches = [m.group(1) for m in _ANSWER_IS_RE.finditer(text) if m.group(1) in letters]
    return matches[-1] if matches else None


_CODE_RE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.S)


def extract_code(text: str) -> str | None:
    """The last fenced code block (```python ... ```, or a bare fence), without the fences."""
    blocks = _CODE_RE.findall(text)
    return blocks[-1] if blocks else None


# --------------------------------------------------------------------------- metrics


def score_boxed_math(output: str, gold: str, meta: Mapping[str, Any]) -> Score:
    """``boxed_math``: the last complete ``\\boxed{}`` against ``gold`` (math normalisation)."""
    pred = last_boxed(output)
    if pred is None:
        return Score(False, None, "no \\boxed{} answer found")
    return Score(math_equal(pred, gold), pred)


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
    detail = "" if result.ok else (result.reason + ": " + result.stderr.strip().splitlines()[-1:][0]
                                   if result.stderr.strip() else result.reason)
    return Score(result.ok, code, detail)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("boxed_math", "last \\boxed{} vs gold, math normalisation and exact numeric equality",
               score_boxed_math, ("math", "reasoning")),
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
