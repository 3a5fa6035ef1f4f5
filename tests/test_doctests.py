"""The examples in the package's docstrings run and give what they show (networkx-style doctests)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import recmas_graph

MODULES = sorted(m.name for m in pkgutil.walk_packages(recmas_graph.__path__, "recmas_graph.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, registry) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} failing example(s) in {name}"
