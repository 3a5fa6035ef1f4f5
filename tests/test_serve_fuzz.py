"""API fuzzing: schemathesis generates requests from the app's own OpenAPI schema (valid and invalid ones)
and sends them to the ASGI app in process; no answer may be a 5xx or break the schema it declares.

The system is the tiny one with every run bounded (a generated ``max_tokens`` of 10 000 or 64 rounds
would only make the test slow), so every request still goes through the real runtime.
"""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.python import asgi  # noqa: E402
from schemathesis.specs.openapi import checks  # noqa: E402

import recmas_graph as rg  # noqa: E402
from recmas_graph.runtime.options import RunOptions  # noqa: E402
from recmas_graph.serve.app import create_app  # noqa: E402
from recmas_graph.serve.models import ServeSettings  # noqa: E402


class _Bounded:
    """A system whose runs are cut to a few tokens, one round and one latent step."""

    def __init__(self, system: Any) -> None:
        self._system = system
        self.spec, self.agents = system.spec, system.agents

    def run(self, questions: Any, options: RunOptions, **kwargs: Any) -> Any:
        small = options.replace(max_new_tokens=min(options.max_new_tokens or 4, 4), rounds=1,
                                latent_steps=min(options.latent_steps or 1, 1))
        return self._system.run(questions, small, **kwargs)


_SYSTEM = rg.compile("sequential_light").build(models="tiny", seed=0)
APP = create_app({"tiny": _Bounded(_SYSTEM), "other": _Bounded(_SYSTEM)},
                 ServeSettings(defaults=RunOptions(rounds=1, latent_steps=1, max_new_tokens=4), batch_wait_ms=0))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def client() -> Any:
    with asgi.get_client(APP) as running:  # one event loop and one lifespan for every generated call
        yield running


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_fuzz_finds_no_server_error_and_no_schema_violation(case: Any, client: Any) -> None:
    # A request valid in shape may still be refused (a model name not served, no user message,
    # a prompt past the context window): acceptance of every valid-looking request is not checked.
    case.call_and_validate(session=client, excluded_checks=[checks.positive_data_acceptance])
