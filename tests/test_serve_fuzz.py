"""Fuzz the API from its own OpenAPI spec (schemathesis): whatever comes in, no 5xx.

Every operation gets generated inputs, valid (positive) and invalid (negative), a few
dozen of each, with the API key so that the write and admin endpoints are exercised too.
"""

from __future__ import annotations

from itertools import product

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from fastapi.testclient import TestClient

from recfunnel.serve.app import create_app
from recfunnel.serve.settings import ServeSettings

from serve_support import API_KEY, small_artifacts

EXAMPLES = 30  # per operation and mode (bounded: the whole test takes seconds)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    app = create_app(ServeSettings(artifacts=small_artifacts(tmp / "art"), state_dir=tmp / "state", api_key=API_KEY, watch_s=0,
                                   compile_ranker=False))
    with TestClient(app):  # runs the lifespan (and closes the intake afterwards)
        yield app


def test_no_server_errors(fuzz_app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation, mode in product(operations, GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:  # noqa: ANN001
            case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=[not_a_server_error])

        try:
            fuzz()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to make invalid (no inputs)
    # it really ran, with valid and invalid inputs
    text = fuzz_app.state.metrics.render().decode()
    print("\n".join(line for line in text.splitlines() if line.startswith("recfunnel_http_requests_total")))
    assert 'status="200"' in text and 'status="422"' in text
    assert 'status="5' not in text
