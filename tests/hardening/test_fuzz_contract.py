"""schemathesis against a real ``shelby serve``'s own ``/openapi.json``.

Every operation of the document gets requests that fit its schema (positive) and, where
it takes parameters or a body, requests that do not (negative), each with the token
its ``security`` names. Every answer must: not be a 5xx; be an error only as
``{"detail": "…"}``; have a documented status, content type and body schema; be a
refusal for a request that does not fit, and not a refusal for one that does.

The node endpoints are called as the module's own registered node (a random ``nodeId``
would only ever meet the 403 for acting as another node), and positive requests are
steered at times onto jobs that exist, in each state, so that more than the 404 path
is exercised.

Bounded: ``EXAMPLES`` requests per operation and mode, fewer once ``BUDGET_SECONDS`` is
spent, so the module stays near 15 s.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api._flow import create_job, register, run_to_running
from conftest import ServerProcess
from hardening._support import module_server, server_errors, verify
from shelby.api.app import ENDPOINTS

__all__ = ["module_server"]

# By hand, SHELBY_FUZZ_EXAMPLES=500 fuzzes harder, with no time budget.
EXAMPLES = int(os.environ.get("SHELBY_FUZZ_EXAMPLES", "15"))
LATE_EXAMPLES = 5  # per operation and mode once the budget is spent
BUDGET_SECONDS = 12.0 if "SHELBY_FUZZ_EXAMPLES" not in os.environ else float("inf")
NODE_ID = "fuzz-node"

# Every operation gets fitting requests; those with a query or a body, unfitting ones too
# (without them there is nothing to get wrong: a path's job id is any string).
RUNS = [(ep.method, ep.path, GenerationMode.POSITIVE) for ep in ENDPOINTS] + [
    (ep.method, ep.path, GenerationMode.NEGATIVE)
    for ep in ENDPOINTS
    if ep.body is not None or ep.query is not None
]


def _id(method: str, path: str, mode: GenerationMode) -> str:
    return f"{method} {path} {mode.value}"


def detail_only(ctx: Any, response: Any, case: Case) -> bool | None:
    """API.md, "Errors": every error answer is exactly ``{"detail": "…"}``."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"detail"}, f"error body {body!r}"
    assert isinstance(body["detail"], str) and body["detail"], f"error body {body!r}"
    assert "Traceback" not in body["detail"]
    return True


COMMON_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MODE_CHECKS = {
    GenerationMode.POSITIVE: [*COMMON_CHECKS, positive_data_acceptance],
    GenerationMode.NEGATIVE: [*COMMON_CHECKS, negative_data_rejection],
}


@dataclass
class Fuzz:
    server: ServerProcess
    schema: Any
    tokens: dict[str, str]
    jobs: list[str]
    session: requests.Session = field(default_factory=requests.Session)
    started: float = field(default_factory=time.monotonic)

    def examples(self) -> int:
        spent = time.monotonic() - self.started
        return EXAMPLES if spent < BUDGET_SECONDS else min(EXAMPLES, LATE_EXAMPLES)

    def headers(self, case: Case) -> dict[str, str]:
        security = case.operation.definition.raw.get("security") or []
        if not security:
            return {}
        (scheme,) = security[0]
        return {"Authorization": f"Bearer {self.tokens[scheme]}"}


@pytest.fixture(scope="module")
def fuzz(module_server: ServerProcess) -> Iterator[Fuzz]:
    server = module_server
    node = register(server, NODE_ID, max_jobs=4)
    # Jobs in each state the node can meet: pending with a script, running on this node,
    # finished, and one with no script.
    with server.client() as admin:
        running = create_job(admin, "fz-running")["jobId"]
        run_to_running(node)
        finished = create_job(admin, "fz-finished")["jobId"]
        run_to_running(node)
        assert node.finish(finished).status_code == 200
        pending = create_job(admin, "fz-pending")["jobId"]
        bare = create_job(admin, "fz-bare", script=None)["jobId"]
    generation = {
        # An unknown query parameter is ignored, as HTTP APIs do (a cache-buster stays
        # harmless); only the documented ones are fuzzed.
        "allow-extra-parameters": False,
        # Credentials are the test's (each operation gets the token it documents); the
        # refusals of missing and wrong tokens are tests/api/test_credentials.py's.
        "with-security-parameters": False,
    }
    schema = schemathesis.openapi.from_url(
        server.url + "/openapi.json",
        config=schemathesis.Config.from_dict({"generation": generation}),
    )
    tokens = {"adminToken": server.admin_token, "joinToken": server.join_token}
    tokens["nodeToken"] = node.token
    fuzz = Fuzz(server, schema, tokens, [running, finished, pending, bare])
    yield fuzz
    fuzz.session.close()
    node.close()


def _steer(case: Case, job_id: str | None) -> None:
    """Point a node call at the module's node, a positive call at times at a real job,
    and keep documented cross-field orders and long polls short."""
    query = case.query if isinstance(case.query, dict) else {}
    body = case.body if isinstance(case.body, dict) else {}
    node_call = case.operation.definition.raw.get("security") == [{"nodeToken": []}]
    for params in (query, body):
        if node_call and isinstance(params.get("nodeId"), str):
            params["nodeId"] = NODE_ID
        if job_id is not None and isinstance(params.get("jobId"), str):
            params["jobId"] = job_id
    path_params = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    if job_id is not None and isinstance(path_params.get("job_id"), str):
        path_params["job_id"] = job_id
    if isinstance(query.get("wait"), int | float) and 0 <= query["wait"] <= 30:
        query["wait"] = 0  # a long poll holds for nothing here
    # docs/provenance.md: seq after treeSize, or from after to, is a 422 by design (the
    # schema cannot say so); fitting requests keep the order.
    for low, high in (("seq", "treeSize"), ("from", "to")):
        a, b = query.get(low), query.get(high)
        if type(a) is int and type(b) is int and a > b:
            query[low], query[high] = b, a


@pytest.mark.parametrize(("method", "path", "mode"), RUNS, ids=[_id(*run) for run in RUNS])
def test_operation_keeps_its_contract(
    fuzz: Fuzz, method: str, path: str, mode: GenerationMode
) -> None:
    """No 5xx, errors as {"detail"}, answers as documented, refusals exactly for
    requests that do not fit the schema."""
    operation = fuzz.schema[path][method]
    steer_jobs = st.sampled_from([None, *fuzz.jobs]) if mode.is_positive else st.none()

    @settings(
        max_examples=fuzz.examples(),
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), job_id=steer_jobs)
    def run(case: Case, job_id: str | None) -> None:
        _steer(case, job_id)
        headers = fuzz.headers(case)
        response = case.call(session=fuzz.session, headers=headers, timeout=15)
        case.validate_response(
            response,
            checks=MODE_CHECKS[mode],
            additional_checks=[detail_only],
            headers=headers,
        )

    run()


def test_the_document_served_is_the_one_fuzzed(fuzz: Fuzz) -> None:
    """Every operation of /openapi.json is in RUNS, so none escapes the fuzzing."""
    served = {
        (method.upper(), path)
        for path, item in fuzz.schema.raw_schema["paths"].items()
        for method in item
    }
    assert served == {(method, path) for method, path, _mode in RUNS}


def test_after_the_fuzzing_the_log_verifies_and_nothing_failed(fuzz: Fuzz) -> None:
    """Whatever the fuzzing appended still chains and verifies, and no request the
    server answered raised an exception (each would have been a 500)."""
    assert re.match(r"ok: \d+ events", verify(fuzz.server))
    assert server_errors(fuzz.server) == []
