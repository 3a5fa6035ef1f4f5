"""The Python examples in the user docs run as written (on tiny models, offline), so docs cannot drift."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = ["README.md", "docs/quickstart.md", "docs/spec.md", "docs/running.md", "docs/evaluation.md",
            "docs/training.md"]


def _blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("doc", RUNNABLE)
def test_python_examples_in_docs_run(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry) -> None:
    blocks = _blocks(doc)
    assert blocks, f"{doc} has no python example"
    monkeypatch.chdir(tmp_path)  # examples may write files
    namespace: dict[str, object] = {"__name__": f"docs_{doc}"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{doc} example {i + 1}", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            pytest.fail(f"{doc} example {i + 1} failed: {type(err).__name__}: {err}")
    assert os.getcwd() == str(tmp_path)
