"""JSON request bodies are refused by their shape while they are read, before they are built.

Parsing a JSON body into Python objects costs far more than its bytes when it holds many small
values: 21 MB of 1.5 M one-word texts took 5 s of CPU and 900 MB before the route could say
"at most 256 texts". So every JSON body first goes through ``check_shape``: a streaming pass
(ijson's C parser) that stops at the first value over a bound, so what a refused request costs
is proportional to what the limits accept, not to what it sent:

* a top-level array (``texts``, ``items``) holds at most ``max_texts`` elements (422);
* each of its elements, and every other top-level value, holds at most ``max_values`` JSON
  values: an item's metadata is at most ``max_metadata_bytes`` of JSON, and every value takes
  at least two bytes with its separator (413);
* nesting is at most ``MAX_DEPTH`` deep (422).

A body the streaming parser finds malformed is left to the route's own parser, which reports it
as usual (400/422).
"""

from __future__ import annotations

import io

import ijson
from fastapi import Request
from fastapi.routing import APIRoute

from .errors import InvalidInput, PayloadTooLarge
from .limits import Limits

MAX_DEPTH = 32
_OPEN = {"start_map", "start_array"}
_CLOSE = {"end_map", "end_array"}


def check_shape(body: bytes, max_elements: int, max_values: int) -> None:
    """Raise as soon as ``body`` breaks one of the bounds (see the module docstring)."""
    depth = 0
    elements = 0       # elements of the current top-level array
    values = 0         # JSON values inside the current top-level value or array element
    key = None         # the current top-level field
    in_array = False   # whether the current top-level value is an array
    try:
        # read in small pieces from a stream: the parser stops where the loop stops
        for event, value in ijson.basic_parse(io.BytesIO(body), buf_size=16 * 1024, use_float=True):
            if event == "map_key":
                if depth == 1:
                    key, values = value, 0
                continue
            if event in _CLOSE:
                depth -= 1
                continue
            if depth == 2 and in_array:
                elements += 1
                values = 0
                if elements > max_elements:
                    raise InvalidInput(f"{key}: at most {max_elements} entries per request")
            if depth >= 1:
                values += 1
                if values > max_values:
                    where = f"{key}[{elements - 1}]" if depth >= 2 and in_array else key
                    raise PayloadTooLarge(f"{where}: more than {max_values} JSON values; too large for one entry")
            if event in _OPEN:
                depth += 1
                if depth > MAX_DEPTH:
                    raise InvalidInput(f"JSON nested more than {MAX_DEPTH} levels deep")
                if depth == 2:
                    in_array, elements = event == "start_array", 0
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError, ValueError) as error:
        if isinstance(error, (InvalidInput, PayloadTooLarge)):
            raise
        return  # malformed: the route's parser says so in its usual words


def check_request_body(body: bytes, limits: Limits) -> None:
    """The bounds of ``check_shape`` for this deployment's limits."""
    settings = limits.settings
    check_shape(body, max_elements=settings.max_texts, max_values=settings.max_metadata_bytes // 2 + 16)


class BoundedJsonRoute(APIRoute):
    """An APIRoute whose JSON body is checked by ``check_request_body`` before FastAPI parses it."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def bounded(request: Request):
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if request.method in ("POST", "PUT", "PATCH") and not content_type.startswith(
                    ("multipart/", "application/x-www-form-urlencoded")):
                body = await request.body()  # cached: FastAPI's parser reads the same bytes
                if body:
                    check_request_body(body, request.app.state.service.limits)
            return await handler(request)

        return bounded
