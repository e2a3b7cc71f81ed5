"""One error hierarchy for the service, and the one place it is mapped to HTTP.

Handlers raise ``ServiceError`` subclasses; errors of the libraries below (undecodable
images, unknown collections, corrupt indexes, unreachable encoder workers, bad job
sources) are translated here too, so no route re-implements the mapping. Every error
leaves as JSON: ``{"error": {"code": ..., "message": ..., "details": ...}}``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error a client can be told about."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class InvalidInput(ServiceError):
    """The request is well-formed but its content cannot be used."""

    status_code = 422
    code = "invalid_input"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class InvalidFilter(InvalidInput):
    """A metadata filter that is malformed (unknown operator, wrong type, too deep or too large)."""

    code = "invalid_filter"


class FetchFailed(InvalidInput):
    """An image URL given as a query could not be fetched (refused address, HTTP error, too large, timeout)."""

    code = "fetch_failed"


class NoUncertainty(InvalidInput):
    """The request needs variances, and the model is deterministic (CLIP): it outputs points."""

    code = "model_without_uncertainty"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "a valid API key is required"):
        super().__init__(message, headers={"WWW-Authenticate": "ApiKey"})


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class UnknownCollection(NotFound):
    code = "unknown_collection"


class UnknownItem(NotFound):
    code = "unknown_item"


class UnknownJob(NotFound):
    code = "unknown_job"


class UnknownSource(NotFound):
    """A job's source names nothing on the server: like an unknown collection, the named thing is missing."""

    code = "unknown_source"


class Conflict(ServiceError):
    """The request contradicts what exists (e.g. a collection of another modality or model)."""

    status_code = 409
    code = "conflict"


class NotCalibrated(Conflict):
    """A calibrated probability was asked for where there is none (no calibrator, or not a text-image pair)."""

    code = "not_calibrated"


class TooManyRequests(ServiceError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float):
        seconds = max(1, int(retry_after_s + 0.999))
        super().__init__(message, details={"retry_after_s": seconds}, headers={"Retry-After": str(seconds)})


class QueueFull(TooManyRequests):
    code = "queue_full"


class Unavailable(ServiceError):
    status_code = 503
    code = "unavailable"


class InsufficientStorage(ServiceError):
    """The server's disk is full: writes are refused until space is freed; reads go on."""

    status_code = 507
    code = "insufficient_storage"


# Errors of the libraries below the service -> the ServiceError class they become.
# Named as "module:Class" and resolved when the app is built, so this module imports
# neither the index nor the job package and a missing optional package costs nothing.
LIBRARY_ERRORS: dict[str, type[ServiceError]] = {
    "models.preprocess:ImageDecodeError": InvalidImage,
    "models.loading:ModelSourceError": Unavailable,
    "indexer.errors:InvalidInputError": InvalidInput,
    "indexer.errors:UnknownCollectionError": UnknownCollection,
    "indexer.errors:CollectionExistsError": Conflict,
    "indexer.errors:CorruptIndexError": Unavailable,
    "indexer.errors:CollectionDroppedError": UnknownCollection,  # before its base IndexClosedError
    "indexer.errors:IndexClosedError": Unavailable,
    "indexer.errors:CollectionBusyError": Unavailable,
    "indexer.errors:StoreError": Unavailable,
    "indexer.errors:DiskFullError": InsufficientStorage,
    "indexer.roots:PathNotAllowedError": Forbidden,
    "indexer.remote_encoder:EncoderUnavailableError": Unavailable,
    "indexer.jobs:UnknownJobError": UnknownJob,
    "indexer.sources:SourceError": InvalidInput,
    "indexer.sources:SourceNotFoundError": UnknownSource,
    "sqlite3:DatabaseError": Unavailable,  # a damaged or busy job history: that feature is unavailable
}


def _resolve(spec: str) -> type[Exception] | None:
    import importlib

    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    found = getattr(module, class_name, None)
    return found if isinstance(found, type) and issubclass(found, Exception) else None


@functools.cache
def library_error_classes() -> dict[type[Exception], type[ServiceError]]:
    resolved = {}
    for spec, target in LIBRARY_ERRORS.items():
        cls = _resolve(spec)
        if cls is not None:
            resolved[cls] = target
    return resolved


def translate(error: Exception) -> ServiceError | None:
    """The ServiceError for a known library exception, else None."""
    if isinstance(error, ServiceError):
        return error
    known = library_error_classes()
    for cls in type(error).__mro__:  # the most specific known class decides
        if cls in known:
            message = str(error)
            if isinstance(error, KeyError) and error.args:  # KeyError quotes its message
                message = str(error.args[0])
            return known[cls](message)
    return None


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = jsonable_encoder(details)
    return {"error": body}


def _response(error: ServiceError) -> JSONResponse:
    return JSONResponse(error_body(error.code, error.message, error.details), status_code=error.status_code,
                        headers=error.headers)


def _validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors without the raw input (it may be huge or binary)."""
    from .schemas import PATTERN_MEANINGS

    details = []
    for error in errors:
        msg = str(error.get("msg", ""))
        if error.get("type") == "string_pattern_mismatch":
            msg = PATTERN_MEANINGS.get((error.get("ctx") or {}).get("pattern"), msg)
        item = {"loc": [str(part) for part in error.get("loc", ())], "msg": msg, "type": str(error.get("type", ""))}
        details.append(item)
    return details


async def _service_error(request: Request, error: ServiceError) -> JSONResponse:
    if error.status_code >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, error.message)
    return _response(error)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    details = _validation_details(list(error.errors()))
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    where = ".".join(part for part in first["loc"] if part not in ("body", "query", "path", "form"))
    message = f"{where}: {first['msg']}" if where else first["msg"]
    return JSONResponse(error_body("invalid_request", message, details), status_code=422)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
             415: "unsupported_media_type"}
    message = error.detail if isinstance(error.detail, str) else "request failed"
    return JSONResponse(error_body(codes.get(error.status_code, "http_error"), message),
                        status_code=error.status_code, headers=getattr(error, "headers", None))


async def _library_error(request: Request, error: Exception) -> JSONResponse:
    translated = translate(error)
    if translated is None:  # a bug: log it with its traceback, tell the client little
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        translated = ServiceError("internal error; the server log has the details")
    return await _service_error(request, translated)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to a JSON response, in one place."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for cls in library_error_classes():
        app.add_exception_handler(cls, _library_error)
    # last resort (Starlette's server-error middleware): still JSON, still logged
    app.add_exception_handler(Exception, _library_error)
