"""Builds the FastAPI app. Heavy things (model, indexes, demo data) load in the lifespan."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from .encoding import EncoderLike
from .errors import install_error_handlers
from .filter_schema import publish as publish_filter_schema
from .images import configure_allocator
from .limits import BodySizeLimitMiddleware
from .metrics import RequestMetricsMiddleware
from .routes import ROUTERS
from .schemas import REFERENCED_MODELS, TEXT_PATTERN, absent_not_null
from .security import KeyGate
from .settings import Settings, load_settings
from .state import ServiceState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DESCRIPTION = """Uncertainty-aware image-text retrieval on ProLIP Gaussian embeddings.

Every input is a Gaussian (mean and log-variance); results are ranked by the closed-form
sampled distance (CSD) or by calibrated match probability, and come with that probability
(when the model has a calibrator), the model's raw pair probability and each input's
uncertainty (the sum of its variances: larger means more general or more ambiguous).
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    if state.settings.demo:
        from .demo import bootstrap, prepare

        prepare(state)  # before anything is written
    await run_in_threadpool(state.open)
    if state.settings.demo:
        await run_in_threadpool(bootstrap, state)
    await state.start()
    log.info("ready: model %s, %d collections in %s", state.queries.model_id, len(state.collection_names()),
             state.settings.data_dir)
    try:
        yield
    finally:
        await state.close()


def create_app(settings: Settings | None = None, *, encoder: EncoderLike | None = None) -> FastAPI:
    """The API. ``encoder`` injects an already loaded encoder (tests, benchmarks)."""
    settings = settings or load_settings()
    configure_allocator()  # freed image memory goes back to the OS (service.images)
    state = ServiceState(settings=settings, encoder=encoder)
    # FastAPIOffline is FastAPI with the Swagger UI and ReDoc files served by the app itself:
    # the docs must render on hosts that cannot reach a CDN, like the web UI does.
    # operation ids are the handlers' names (search_text, add_items ...): generated clients name their
    # functions after them
    app = FastAPIOffline(title="prolip-retrieval", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                         generate_unique_id_function=lambda route: route.name)
    app.state.service = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    _add_web_ui(app)
    # The last added is outermost: metrics see every request, CORS headers go on every
    # answer (413s included), and the body limit guards all that reads a body.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    # Inside CORS (preflights carry no key) and outside routing (401 whether a route matches or not).
    app.add_middleware(KeyGate, keys=state.api_keys, header=settings.api_key_header)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["Retry-After"])
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)
    _publish_referenced_models(app)  # first: the steps below rewrite these schemas too
    _publish_forms_without_null(app)
    _publish_filter_schema(app)
    _publish_limits(app, settings)
    _declare_auth(app, settings)
    return app


FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
COMPONENT_REF = "#/components/schemas/{model}"


def _publish_referenced_models(app: FastAPI) -> None:
    """Models that operations name only through ``openapi_extra`` are added to ``components``.

    FastAPI publishes the models of the parameters it parses itself; a route that reads its body
    by hand (one route taking JSON or a form) refers to its model by ``$ref``, which must resolve.
    The document is deep-copied first: FastAPI puts the routes' ``openapi_extra`` dicts into it as
    they are, and the steps after this one write this deployment's limits into the document.
    """
    from pydantic.json_schema import models_json_schema

    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = app.openapi_schema = copy.deepcopy(generate())
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        _, published = models_json_schema([(model, "validation") for model in REFERENCED_MODELS],
                                          ref_template=COMPONENT_REF)
        for name, definition in published.get("$defs", {}).items():
            components.setdefault(name, definition)
        return schema

    app.openapi = openapi


def _publish_forms_without_null(app: FastAPI) -> None:
    """Optional form fields appear in the OpenAPI document as fields one may leave out, not as nullable."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.get("components", {}).get("schemas", {})
        for operations in schema["paths"].values():
            for operation in operations.values():
                for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
                    ref = content.get("schema", {}).get("$ref", "")
                    if media_type in FORM_MEDIA_TYPES and ref.startswith("#/components/schemas/"):
                        absent_not_null(components[ref.rsplit("/", 1)[1]])
        return schema

    app.openapi = openapi


def _publish_filter_schema(app: FastAPI) -> None:
    """The metadata filter's schema (``service.filter_schema``) in ``components``, where request bodies point."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        publish_filter_schema(schema)
        return schema

    app.openapi = openapi


def _publish_limits(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI document states this deployment's limits, so a request it allows is one we accept.

    The models are written once, but ``max_text_chars``, ``max_texts``, ``max_files`` and
    ``max_k`` are settings: they are written into the generated document here (maxLength,
    maxItems, maximum), wherever a text, a list of texts, a list of uploads or ``k`` appears.
    """
    generate = app.openapi

    def limit(node: object, name: str | None = None) -> None:
        if isinstance(node, list):
            for child in node:
                limit(child)
            return
        if not isinstance(node, dict):
            return
        if node.get("type") == "string" and node.get("pattern") == TEXT_PATTERN:
            node["maxLength"] = min(node.get("maxLength", settings.max_text_chars), settings.max_text_chars)
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            items = node["items"]
            if items.get("pattern") == TEXT_PATTERN:
                node["maxItems"] = min(node.get("maxItems", settings.max_texts), settings.max_texts)
            elif items.get("format") == "binary" or "contentMediaType" in items:
                node["maxItems"] = min(node.get("maxItems", settings.max_files), settings.max_files)
        if name == "k" and node.get("type") == "integer":
            node["maximum"] = min(node.get("maximum", settings.max_k), settings.max_k)
        if node.get("in") == "query" and node.get("name") == "k":
            limit(node.get("schema"), "k")
        for key, child in node.items():
            if key == "properties" and isinstance(child, dict):
                for prop, value in child.items():
                    limit(value, prop)
            elif key != "properties":
                limit(child)

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        limit(schema)
        return schema

    app.openapi = openapi


def _declare_auth(app: FastAPI, settings: Settings) -> None:
    """With API keys configured, the OpenAPI document says which operations need one and how to send it.

    The check itself is ``deps.authorized``; this only documents it (so /docs offers the key and
    API clients and fuzzers know every guarded operation), from the routes that really depend on it.
    """
    if not settings.api_keys:
        return
    from fastapi.routing import APIRoute

    from .deps import authorized

    def uses_auth(dependant) -> bool:
        return any(dep.call is authorized or uses_auth(dep) for dep in dependant.dependencies)

    # OpenAPI writes "{item_id}" where the route says "{item_id:path}": compare without convertors.
    guarded = {(re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path), method.lower()) for route in app.routes
               if isinstance(route, APIRoute) and uses_auth(route.dependant) for method in route.methods}
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": settings.api_key_header},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if (path, method) in guarded:
                    operation["security"] = [{"apiKey": []}, {"bearer": []}]
        return schema

    app.openapi = openapi


def _add_web_ui(app: FastAPI) -> None:
    """Serve the web UI at / when it is installed (service/static/index.html), else point to the docs."""
    index_html = STATIC_DIR / "index.html"
    if index_html.is_file():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

        @app.get("/", include_in_schema=False)
        async def web_ui() -> FileResponse:
            return FileResponse(index_html)
    else:
        @app.get("/", include_in_schema=False)
        async def docs_redirect() -> RedirectResponse:
            return RedirectResponse("/docs")
