"""An OpenAPI-driven fuzz pass against the real server: whatever is sent, never a 5xx.

Every operation of the published schema gets ``EXAMPLES`` generated requests (schemathesis
strategies driven by Hypothesis, derandomised so a run is reproducible).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

EXAMPLES = 10


def test_no_operation_answers_with_a_server_error(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    checked = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            response = case.call(base_url=server.url, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])

        fuzz()
        checked.append(operation.label)
    assert len(checked) == len(operations)
