"""OpenAPI-driven fuzzing of a real server with API keys: every operation, every response check.

Each operation of the published schema gets ``EXAMPLES`` generated requests (derandomised, so a
run is reproducible) sent with a valid key, checked by schemathesis's response checks (no 5xx,
status codes, content types, headers and bodies as documented, malformed input refused,
``ignored_auth``: the same request without or with a wrong key must be refused). One check is
left out, with its reason: ``positive_data_acceptance`` treats every schema-valid request as
acceptable, but some rules are not in the schema (a job source must exist, ``rank`` takes
exactly one of ``query`` or ``file``, a text must hold a non-space character, image routes need
at least one file), and those requests rightly get a 422 with a reason (7 operations). A
second pass sends no key at all: every guarded operation must answer 401, and nothing may
answer 5xx.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from .test_bad_input import AUTH, keyed_server  # noqa: F401  (the module-scoped keyed server)

EXAMPLES = 8


def _run(server, schema, headers, checks=None, excluded=()):
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures = {}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            response = case.call(base_url=server.url, headers=headers, timeout=30)
            case.validate_response(response, checks=checks, excluded_checks=list(excluded), headers=headers)
            if not headers and case.operation.path not in ("/healthz", "/readyz"):
                assert response.status_code == 401, (case.operation.label, response.status_code)

        try:
            fuzz()
        except BaseException as error:  # noqa: BLE001  (collect every operation's failure, then report)
            failures[operation.label] = str(error)[:1500]
    return len(operations), failures


def test_fuzz_with_a_key_runs_every_check_on_every_operation(keyed_server):  # noqa: F811
    schema = schemathesis.openapi.from_url(keyed_server.url + "/openapi.json", headers=AUTH)
    assert set(schema.raw_schema["components"]["securitySchemes"]) == {"apiKey", "bearer"}  # so ignored_auth runs
    count, failures = _run(keyed_server, schema, AUTH, excluded=(positive_data_acceptance,))
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_fuzz_without_a_key_is_refused_everywhere_and_never_a_server_error(keyed_server):  # noqa: F811
    schema = schemathesis.openapi.from_url(keyed_server.url + "/openapi.json", headers=AUTH)
    count, failures = _run(keyed_server, schema, {}, checks=[not_a_server_error])
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
