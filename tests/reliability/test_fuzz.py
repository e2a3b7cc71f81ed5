"""OpenAPI-driven fuzzing of a real server with API keys: every operation, every check.

Each operation of the published schema gets ``EXAMPLES`` generated requests (derandomised, so a
run is reproducible) sent with a valid key and checked by all of schemathesis's response checks:
no 5xx, status codes, content types, headers and bodies as documented, malformed input refused,
``ignored_auth`` (the same request without or with a wrong key must be refused) and
``positive_data_acceptance`` (a request the schema allows must not be refused: the schema states
every rule the routes apply, such as a text holding a non-space character, at least one upload,
and exactly one query for rank; a job source that does not exist is an unknown name, 404, which
the check accepts as it does for any unknown resource). Image parts are declared as image media
types; ``IMAGES`` teaches the generator to make real images of those types, as it cannot invent
valid PNG bytes. A second pass sends no key at all: every guarded operation must answer 401, and
nothing may answer 5xx.
"""

from __future__ import annotations

import io
import json

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from .test_bad_input import AUTH, keyed_server  # noqa: F401  (the module-scoped keyed server)

EXAMPLES = 8


def _image_bytes(image_format: str) -> st.SearchStrategy[bytes]:
    def encode(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", size, colour).save(out, format=image_format)
        return out.getvalue()

    side = st.integers(1, 48)
    return st.builds(encode, st.tuples(side, side), st.tuples(*[st.integers(0, 255)] * 3))


IMAGES = {"image/png": "PNG", "image/jpeg": "JPEG"}
for _media_type, _format in IMAGES.items():
    schemathesis.openapi.media_type(_media_type, _image_bytes(_format))


def _images_as_lists(case) -> None:
    """Work around schemathesis putting one generated image where the schema has an array of images.

    Its media-type strategy for an encoded part replaces the whole property with one file, which
    it then sends without a filename (so not as a file upload); a list of that one file is what
    the schema describes.
    """
    form = case.body
    body = case.operation.get_body_for_media_type(case.media_type) if case.media_type else None
    if not isinstance(form, dict) or body is None:
        return
    for name, prop in body.form_properties.items():
        if isinstance(prop, dict) and prop.get("type") == "array" and isinstance(form.get(name), bytes):
            form[name] = [form[name]]


IMAGE_FORM_OPERATIONS = ("POST /v1/collections/{name}/items", "POST /v1/collections/{name}/images")


def _as_list(value) -> list:
    return value if isinstance(value, list) else ([] if value is None else [value])


def _breaks_a_rank_rule(form: dict) -> bool:
    """/v1/rank's few-shot examples: one label per example, each label one of the candidates."""
    candidates = {str(c) for c in _as_list(form.get("candidates"))}
    for examples, labels in (("example_files", "example_labels"), ("example_ids", "example_id_labels")):
        given, named = _as_list(form.get(examples)), _as_list(form.get(labels))
        if len(given) != len(named) or any(str(label) not in candidates for label in named):
            return True
    return False


def _breaks_an_unstatable_rule(case) -> bool:
    """Whether a request breaks a rule JSON Schema cannot state.

    An image upload to a collection: ``ids`` and ``metadata`` give one entry per file (equal array
    lengths), each metadata entry is a JSON object, and ids are unique. /v1/rank: see
    ``_breaks_a_rank_rule``. Such a request rightly gets a 422, so only for it the
    ``positive_data_acceptance`` check gives way to asserting that 422.
    """
    if case.media_type != "multipart/form-data":
        return False
    form = case.body if isinstance(case.body, dict) else {}
    if case.operation.label == "POST /v1/rank":
        return _breaks_a_rank_rule(form)
    if case.operation.label not in IMAGE_FORM_OPERATIONS:
        return False
    files, ids, metadata = (_as_list(form.get(name)) for name in ("files", "ids", "metadata"))
    if any(values and len(values) != len(files) for values in (ids, metadata)) or len(set(ids)) != len(ids):
        return True
    for text in metadata:
        try:
            if str(text).strip() and not isinstance(json.loads(text), dict):
                return True
        except ValueError:
            return True
    return False


def _run(server, schema, headers, checks=None):
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures = {}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            _images_as_lists(case)
            response = case.call(base_url=server.url, headers=headers, timeout=30)
            if headers and _breaks_an_unstatable_rule(case):
                assert response.status_code == 422, (case.operation.label, response.status_code, response.text)
                case.validate_response(response, checks=checks, excluded_checks=[positive_data_acceptance],
                                       headers=headers)
                return
            case.validate_response(response, checks=checks, headers=headers)
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
    count, failures = _run(keyed_server, schema, AUTH)
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_fuzz_without_a_key_is_refused_everywhere_and_never_a_server_error(keyed_server):  # noqa: F811
    schema = schemathesis.openapi.from_url(keyed_server.url + "/openapi.json", headers=AUTH)
    count, failures = _run(keyed_server, schema, {}, checks=[not_a_server_error])
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
