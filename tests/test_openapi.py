"""Fuzzing tobira's own API surface from its OpenAPI document: no 5xx, answers match the schema.

tobira runs as a real process beside the stand-in; the fuzzer is signed in, so `/session` and the proxy
are exercised past the session check (the stand-in answers whatever the proxy forwards). Schemathesis's
pytest plugin does not run under pytest 9, so its Python API drives one hypothesis test per operation.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import load_settings
from app.main import create_app
from app.standin import RunningStandin
from tests.conftest import Browser, TobiraProcess

SCHEMA = schemathesis.openapi.from_dict(
    create_app(load_settings(secret_keys=["k" * 32], data_dir="/nonexistent")).openapi()
)
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}
CHECKS = (status_code_conformance, content_type_conformance, response_schema_conformance)


@pytest.fixture(scope="module")
def signed_in_cookie(tobira: TobiraProcess, standin: RunningStandin) -> Iterator[str]:
    with httpx.Client(timeout=20) as client:
        Browser(tobira.url, standin, client).sign_in("alice")
        yield client.cookies["tobira"]


# Not fuzzed: signing the fuzzer out (it would test the signed-out paths from then on), and the server
# lookup, whose every generated name would be a DNS query leaving this machine (it has its own tests).
NOT_FUZZED = ("POST /logout", "GET /lookup")


@pytest.mark.parametrize("label", sorted(label for label in OPERATIONS if label not in NOT_FUZZED))
def test_no_server_errors_and_answers_match_the_schema(
    label: str, tobira: TobiraProcess, signed_in_cookie: str
) -> None:
    headers = {"Origin": tobira.url, "Cookie": f"tobira={signed_in_cookie}"}

    @given(case=OPERATIONS[label].as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=tobira.url, headers=headers, timeout=20)
        assert response.status_code not in (500, 501, 503), response.text[:300]
        case.validate_response(response, checks=CHECKS)

    fuzz()


def test_logout_is_described_and_refuses_cross_site(tobira: TobiraProcess) -> None:
    assert all(label in OPERATIONS for label in NOT_FUZZED)
    answer = httpx.post(tobira.url + "/logout", headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403
