"""A Python client for the prolip-retrieval HTTP API, synchronous and asynchronous (httpx).

::

    from prolip_retrieval import Client, ApiError

    with Client("http://127.0.0.1:8000", api_key=None) as api:
        found = api.search_text("a red circle", "demo-images", k=5)
        for hit in found["results"]:
            print(hit["id"], hit["csd"], hit["probability"], hit["uncertainty"])
        api.add_text_items("notes", ["a blue square", {"id": "n2", "text": "a dog", "metadata": {"page": 3}}])
        api.add_image_items("photos", ["cat.jpg", "dog.heic"])        # paths, bytes or open files
        image = api.item_image("photos", "cat.jpg")                    # .data, .media_type

    async with AsyncClient("http://127.0.0.1:8000") as api:             # the same methods, awaited
        found = await api.search_text("a red circle", "demo-images")

One method per operation of the API, named as its ``operationId`` (``/openapi.json``); the
answers are the API's JSON documents, typed as the ``TypedDict``s of ``prolip_retrieval.types``.
Options the server adds before this client knows them can be passed as keyword arguments
(``**extra``): they are sent as they are. The searches take the same options as keywords:
``offset`` or ``cursor`` (a page's ``next_cursor``), ``filter`` (a metadata filter, a dict),
``collapse_duplicates`` and ``duplicate_threshold``::

        page = api.search_text("a red circle", "photos", k=20, filter={"field": "year", "range": {"gte": 2020}},
                               collapse_duplicates=True)
        more = api.search_text("a red circle", "photos", k=20, filter=..., collapse_duplicates=True,
                               cursor=page["next_cursor"])
        similar = api.search_item("photos", "cat.jpg")                 # more like this
        captions = api.search_item("demo-captions", "cat.jpg", item_collection="photos")

Errors: an answer of 4xx or 5xx raises ``ApiError`` carrying the status, the API's error
``code`` (``unknown_collection``, ``queue_full`` ...), its message and details. 429 (rate limited,
encoder queue full) and 503 (not ready, encoder workers unavailable) mean the server did not act
on the request, so it is sent again, up to ``Retry.attempts`` times, after the ``Retry-After``
the server asks for (else an exponential back-off), and the last answer is raised if it never
succeeds. Network errors are httpx's, raised as they are.
"""

from __future__ import annotations

import asyncio
import email.utils
import mimetypes
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import quote

import httpx

from .types import (
    AddItemsResponse,
    CollectionsResponse,
    CollectionStats,
    DeletedResponse,
    EmbeddingResponse,
    Health,
    ItemResponse,
    JobRoots,
    JobsResponse,
    JobStatus,
    RankResponse,
    Readiness,
    SearchResponse,
    TextItem,
    TraverseResponse,
    UncertaintyResponse,
)

DEFAULT_URL = "http://127.0.0.1:8000"
ImageInput = bytes | str | os.PathLike | IO[bytes] | tuple[str, bytes]
RETRY_STATUSES = (429, 503)


class ApiError(Exception):
    """The API answered with an error: ``status`` (HTTP), ``code`` (the API's), ``message``, ``details``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details
        self.retry_after = retry_after


@dataclass(frozen=True)
class Retry:
    """How 429 and 503 answers are retried: ``attempts`` sends in all, waiting what ``Retry-After`` asks
    (at most ``max_wait_s``), else ``backoff_s`` doubled after each try (at most ``max_backoff_s``)."""

    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_wait_s: float = 60.0
    statuses: tuple[int, ...] = RETRY_STATUSES

    def __post_init__(self):
        if self.attempts < 1 or self.backoff_s < 0 or self.max_wait_s < 0:
            raise ValueError("attempts must be >= 1, backoff_s and max_wait_s >= 0")

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait_s)
        return min(self.backoff_s * 2**attempt, self.max_backoff_s)


@dataclass(frozen=True)
class ItemImage:
    data: bytes
    media_type: str


@dataclass
class _Request:
    method: str
    path: str
    json: Any = None
    data: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    params: dict[str, Any] | None = None
    expect: str = "json"                 # json, text or image
    accept: tuple[int, ...] = ()         # error statuses whose body is the answer (readyz: 503)
    retry: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _error(response: httpx.Response) -> ApiError:
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    try:
        body = response.json()
        error = body["error"]
        return ApiError(response.status_code, str(error["code"]), str(error["message"]), error.get("details"),
                        retry_after)
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", response.text[:500] or response.reason_phrase, None,
                        retry_after)


def _answer(request: _Request, response: httpx.Response) -> Any:
    if response.status_code >= 400 and response.status_code not in request.accept:
        raise _error(response)
    if request.expect == "text":
        return response.text
    if request.expect == "image":
        return ItemImage(response.content, response.headers.get("content-type", "application/octet-stream"))
    return response.json()


def _image_part(field_name: str, image: ImageInput, index: int) -> tuple[str, tuple[str, bytes, str]]:
    """An upload part; files are read now, so a retried request sends the same bytes."""
    if isinstance(image, tuple):
        name, data = image
    elif isinstance(image, bytes | bytearray):
        name, data = f"image-{index}", bytes(image)
    elif isinstance(image, str | os.PathLike):
        path = Path(image)
        name, data = path.name, path.read_bytes()
    else:
        data = image.read()
        name = Path(getattr(image, "name", f"image-{index}")).name
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return field_name, (name, data, media_type)


def _form(values: dict[str, Any]) -> dict[str, Any]:
    """Form fields: None left out, booleans and numbers as text, lists as repeated fields, objects as JSON."""
    import json

    form = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, dict):  # a metadata filter: a JSON part
            form[key] = json.dumps(value)
        elif isinstance(value, list | tuple):
            form[key] = [str(v) for v in value]
        elif isinstance(value, bool):
            form[key] = "true" if value else "false"
        else:
            form[key] = str(value)
    return form


def _body(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _seg(value: str) -> str:
    return quote(value, safe="")


def _item(value: str) -> str:
    return quote(value, safe="/")  # ids of folder items are paths; the route takes them whole


class _Operations:
    """Builds the request of each operation; ``Client`` sends them, ``AsyncClient`` awaits them."""

    # --- search and scoring
    @staticmethod
    def search_text(query: str, collection: str, k: int, rank: str, min_probability: float | None,
                    extra: dict) -> _Request:
        return _Request("POST", "/v1/search/text", json=_body(
            {"query": query, "collection": collection, "k": k, "rank": rank, "min_probability": min_probability,
             **extra}))

    @staticmethod
    def search_image(image: ImageInput, collection: str, k: int, rank: str, min_probability: float | None,
                     extra: dict) -> _Request:
        return _Request("POST", "/v1/search/image", files=[_image_part("file", image, 0)], data=_form(
            {"collection": collection, "k": k, "rank": rank, "min_probability": min_probability, **extra}))

    @staticmethod
    def search_item(collection: str, item_id: str, item_collection: str | None, k: int, rank: str,
                    extra: dict) -> _Request:
        return _Request("POST", "/v1/search/item", json=_body(
            {"collection": collection, "item_id": item_id, "item_collection": item_collection, "k": k, "rank": rank,
             **extra}))

    @staticmethod
    def search_embedding(mean: Sequence[float], logvar: Sequence[float], collection: str, k: int, rank: str,
                         extra: dict) -> _Request:
        return _Request("POST", "/v1/search/embedding", json=_body(
            {"mean": [float(v) for v in mean], "logvar": [float(v) for v in logvar], "collection": collection,
             "k": k, "rank": rank, **extra}))

    @staticmethod
    def search_url(url: str, collection: str, k: int, rank: str, extra: dict) -> _Request:
        return _Request("POST", "/v1/search/url", json=_body(
            {"url": url, "collection": collection, "k": k, "rank": rank, **extra}))

    @staticmethod
    def text_uncertainty(texts: Sequence[str], collection: str | None) -> _Request:
        return _Request("POST", "/v1/uncertainty/text", json=_body({"texts": list(texts), "collection": collection}))

    @staticmethod
    def image_uncertainty(images: Iterable[ImageInput], collection: str | None) -> _Request:
        return _Request("POST", "/v1/uncertainty/image", files=[_image_part("files", image, i)
                                                                 for i, image in enumerate(images)],
                        data=_form({"collection": collection}))

    @staticmethod
    def embed_text(texts: Sequence[str]) -> _Request:
        return _Request("POST", "/v1/embed/text", json={"texts": list(texts)})

    @staticmethod
    def embed_image(images: Iterable[ImageInput]) -> _Request:
        return _Request("POST", "/v1/embed/image", files=[_image_part("files", image, i)
                                                           for i, image in enumerate(images)])

    @staticmethod
    def rank_candidates(fields: dict[str, Any], image: ImageInput | None, candidate_images, example_images
                        ) -> _Request:
        files = []
        if image is not None:
            files.append(_image_part("file", image, 0))
        files += [_image_part("candidate_files", c, i) for i, c in enumerate(candidate_images or ())]
        files += [_image_part("example_files", e, i) for i, e in enumerate(example_images or ())]
        # without a file the form goes urlencoded, which the route reads as well
        return _Request("POST", "/v1/rank", data=_form(fields), files=files or None)

    @staticmethod
    def traverse_image(image: ImageInput, fields: dict[str, Any]) -> _Request:
        return _Request("POST", "/v1/traverse/image", files=[_image_part("file", image, 0)], data=_form(fields))

    # --- collections and items
    @staticmethod
    def add_text_items(name: str, items: Iterable[TextItem | str]) -> _Request:
        body = [{"text": item} if isinstance(item, str) else dict(item) for item in items]
        return _Request("POST", f"/v1/collections/{_seg(name)}/texts", json={"items": body})

    @staticmethod
    def add_image_items(name: str, images: Iterable[ImageInput], ids: Sequence[str] | None,
                        metadata: Sequence[dict[str, Any]] | None) -> _Request:
        import json

        data = {}
        if ids is not None:
            data["ids"] = list(ids)
        if metadata is not None:
            data["metadata"] = [json.dumps(m) for m in metadata]
        return _Request("POST", f"/v1/collections/{_seg(name)}/images", data=data,
                        files=[_image_part("files", image, i) for i, image in enumerate(images)])


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float, retry: Retry | None,
                 headers: dict[str, str] | None):
        self.base_url = base_url.rstrip("/")
        self.retry = retry or Retry()
        self.headers = dict(headers or {})
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    @staticmethod
    def _kwargs(request: _Request) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": request.params}
        if request.json is not None:
            kwargs["json"] = request.json
        if request.files is not None:
            kwargs["files"] = request.files
            kwargs["data"] = request.data or {}
        elif request.data is not None:
            kwargs["data"] = request.data
        return kwargs

    def _should_retry(self, request: _Request, response: httpx.Response, attempt: int) -> bool:
        return (request.retry and response.status_code in self.retry.statuses
                and response.status_code not in request.accept and attempt + 1 < self.retry.attempts)

    def _delay(self, response: httpx.Response, attempt: int) -> float:
        return self.retry.delay(attempt, retry_after_seconds(response.headers.get("retry-after")))


class Client(_Base):
    """Synchronous client; one ``httpx.Client`` (connection pool) per instance. Thread-safe as httpx is."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 60.0,
                 retry: Retry | None = None, headers: dict[str, str] | None = None,
                 http: httpx.Client | None = None):
        super().__init__(base_url, api_key, timeout, retry, headers)
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self._owns_http = http is None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, request: _Request) -> Any:
        for attempt in range(self.retry.attempts):
            response = self._http.request(request.method, request.path, headers=self.headers,
                                          **self._kwargs(request))
            if not self._should_retry(request, response, attempt):
                return _answer(request, response)
            time.sleep(self._delay(response, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    # --- health
    def healthz(self) -> Health:
        return self._send(_Request("GET", "/healthz"))

    def readyz(self) -> Readiness:
        """Readiness; ``ready`` is false (the server answered 503) while a model or index is unavailable."""
        return self._send(_Request("GET", "/readyz", accept=(503,), retry=False))

    def metrics(self) -> str:
        return self._send(_Request("GET", "/metrics", expect="text"))

    # --- search and scoring
    def search_text(self, query: str, collection: str, *, k: int = 10, rank: str = "csd",
                    min_probability: float | None = None, **extra: Any) -> SearchResponse:
        return self._send(_Operations.search_text(query, collection, k, rank, min_probability, extra))

    def search_image(self, image: ImageInput, collection: str, *, k: int = 10, rank: str = "csd",
                     min_probability: float | None = None, **extra: Any) -> SearchResponse:
        return self._send(_Operations.search_image(image, collection, k, rank, min_probability, extra))

    def search_item(self, collection: str, item_id: str, *, item_collection: str | None = None, k: int = 10,
                    rank: str = "csd", **extra: Any) -> SearchResponse:
        """More like this: item ``item_id`` of ``item_collection`` (default ``collection``) is the query."""
        return self._send(_Operations.search_item(collection, item_id, item_collection, k, rank, extra))

    def search_embedding(self, mean: Sequence[float], logvar: Sequence[float], collection: str, *, k: int = 10,
                         rank: str = "csd", **extra: Any) -> SearchResponse:
        """A Gaussian computed elsewhere (unit-norm mean, log-variances) is the query."""
        return self._send(_Operations.search_embedding(mean, logvar, collection, k, rank, extra))

    def search_url(self, url: str, collection: str, *, k: int = 10, rank: str = "csd", **extra: Any
                   ) -> SearchResponse:
        """The image at ``url`` (fetched by the server, public addresses only unless it allows more) is the query."""
        return self._send(_Operations.search_url(url, collection, k, rank, extra))

    def text_uncertainty(self, texts: Sequence[str], collection: str | None = None) -> UncertaintyResponse:
        return self._send(_Operations.text_uncertainty(texts, collection))

    def image_uncertainty(self, images: Iterable[ImageInput], collection: str | None = None) -> UncertaintyResponse:
        return self._send(_Operations.image_uncertainty(images, collection))

    def embed_text(self, texts: Sequence[str]) -> EmbeddingResponse:
        return self._send(_Operations.embed_text(texts))

    def embed_image(self, images: Iterable[ImageInput]) -> EmbeddingResponse:
        return self._send(_Operations.embed_image(images))

    def rank_candidates(self, *, query: str | None = None, image: ImageInput | None = None,
                        candidates: Sequence[str] | None = None,
                        candidate_images: Iterable[ImageInput] | None = None,
                        templates: Sequence[str] | None = None, example_images: Iterable[ImageInput] | None = None,
                        **fields: Any) -> RankResponse:
        """One query (``query`` text or ``image``) against ``candidates`` (texts) or ``candidate_images``;
        every other field of /v1/rank (``rank``, ``prompt_filter``, ``example_labels`` ...) by keyword."""
        form = {"query": query, "candidates": candidates, "templates": templates, **fields}
        return self._send(_Operations.rank_candidates(form, image, candidate_images, example_images))

    def traverse_image(self, image: ImageInput, collection: str | None = None, **fields: Any) -> TraverseResponse:
        """Captions from the most specific match of ``image`` to the most inclusive (``method``, ``k`` ...)."""
        return self._send(_Operations.traverse_image(image, {"collection": collection, **fields}))

    # --- collections and items
    def list_collections(self) -> CollectionsResponse:
        return self._send(_Request("GET", "/v1/collections"))

    def get_collection(self, name: str, extremes: int = 5) -> CollectionStats:
        return self._send(_Request("GET", f"/v1/collections/{_seg(name)}", params={"extremes": extremes}))

    def drop_collection(self, name: str) -> DeletedResponse:
        return self._send(_Request("DELETE", f"/v1/collections/{_seg(name)}"))

    def add_text_items(self, name: str, items: Iterable[TextItem | str]) -> AddItemsResponse:
        """Add texts (plain strings, or ``{"id", "text", "metadata"}``); creates the collection."""
        return self._send(_Operations.add_text_items(name, items))

    def add_image_items(self, name: str, images: Iterable[ImageInput], *, ids: Sequence[str] | None = None,
                        metadata: Sequence[dict[str, Any]] | None = None) -> AddItemsResponse:
        """Add images (paths, bytes, open files or (filename, bytes)); creates the collection."""
        return self._send(_Operations.add_image_items(name, images, ids, metadata))

    def get_item(self, name: str, item_id: str) -> ItemResponse:
        return self._send(_Request("GET", f"/v1/collections/{_seg(name)}/items/{_item(item_id)}"))

    def delete_item(self, name: str, item_id: str) -> DeletedResponse:
        return self._send(_Request("DELETE", f"/v1/collections/{_seg(name)}/items/{_item(item_id)}"))

    def item_image(self, name: str, item_id: str) -> ItemImage:
        return self._send(_Request("GET", f"/v1/collections/{_seg(name)}/items/{_item(item_id)}/image",
                                   expect="image"))

    # --- jobs
    def job_roots(self) -> JobRoots:
        return self._send(_Request("GET", "/v1/jobs/roots"))

    def list_jobs(self) -> JobsResponse:
        return self._send(_Request("GET", "/v1/jobs"))

    def submit_job(self, source: str, collection: str, *, modality: str | None = None, sync: bool = False,
                   **extra: Any) -> JobStatus:
        return self._send(_Request("POST", "/v1/jobs", json=_body(
            {"source": source, "collection": collection, "modality": modality, "sync": sync, **extra})))

    def get_job(self, job_id: str) -> JobStatus:
        return self._send(_Request("GET", f"/v1/jobs/{_seg(job_id)}"))

    def cancel_job(self, job_id: str) -> JobStatus:
        return self._send(_Request("DELETE", f"/v1/jobs/{_seg(job_id)}"))

    def wait_job(self, job_id: str, timeout: float = 3600.0, poll_s: float = 0.5) -> JobStatus:
        """Poll a job until it is completed, failed, cancelled or paused (TimeoutError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["state"] in FINISHED_STATES:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout}s")
            time.sleep(poll_s)


FINISHED_STATES = ("completed", "failed", "cancelled", "paused", "interrupted")


class AsyncClient(_Base):
    """Asynchronous client: the methods of ``Client``, awaited. One ``httpx.AsyncClient`` per instance."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = 60.0,
                 retry: Retry | None = None, headers: dict[str, str] | None = None,
                 http: httpx.AsyncClient | None = None):
        super().__init__(base_url, api_key, timeout, retry, headers)
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self._owns_http = http is None

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, request: _Request) -> Any:
        for attempt in range(self.retry.attempts):
            response = await self._http.request(request.method, request.path, headers=self.headers,
                                                **self._kwargs(request))
            if not self._should_retry(request, response, attempt):
                return _answer(request, response)
            await asyncio.sleep(self._delay(response, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def healthz(self) -> Health:
        return await self._send(_Request("GET", "/healthz"))

    async def readyz(self) -> Readiness:
        return await self._send(_Request("GET", "/readyz", accept=(503,), retry=False))

    async def metrics(self) -> str:
        return await self._send(_Request("GET", "/metrics", expect="text"))

    async def search_text(self, query: str, collection: str, *, k: int = 10, rank: str = "csd",
                          min_probability: float | None = None, **extra: Any) -> SearchResponse:
        return await self._send(_Operations.search_text(query, collection, k, rank, min_probability, extra))

    async def search_image(self, image: ImageInput, collection: str, *, k: int = 10, rank: str = "csd",
                           min_probability: float | None = None, **extra: Any) -> SearchResponse:
        return await self._send(_Operations.search_image(image, collection, k, rank, min_probability, extra))

    async def search_item(self, collection: str, item_id: str, *, item_collection: str | None = None, k: int = 10,
                          rank: str = "csd", **extra: Any) -> SearchResponse:
        return await self._send(_Operations.search_item(collection, item_id, item_collection, k, rank, extra))

    async def search_embedding(self, mean: Sequence[float], logvar: Sequence[float], collection: str, *,
                               k: int = 10, rank: str = "csd", **extra: Any) -> SearchResponse:
        return await self._send(_Operations.search_embedding(mean, logvar, collection, k, rank, extra))

    async def search_url(self, url: str, collection: str, *, k: int = 10, rank: str = "csd", **extra: Any
                         ) -> SearchResponse:
        return await self._send(_Operations.search_url(url, collection, k, rank, extra))

    async def text_uncertainty(self, texts: Sequence[str], collection: str | None = None) -> UncertaintyResponse:
        return await self._send(_Operations.text_uncertainty(texts, collection))

    async def image_uncertainty(self, images: Iterable[ImageInput], collection: str | None = None
                                ) -> UncertaintyResponse:
        return await self._send(_Operations.image_uncertainty(images, collection))

    async def embed_text(self, texts: Sequence[str]) -> EmbeddingResponse:
        return await self._send(_Operations.embed_text(texts))

    async def embed_image(self, images: Iterable[ImageInput]) -> EmbeddingResponse:
        return await self._send(_Operations.embed_image(images))

    async def rank_candidates(self, *, query: str | None = None, image: ImageInput | None = None,
                              candidates: Sequence[str] | None = None,
                              candidate_images: Iterable[ImageInput] | None = None,
                              templates: Sequence[str] | None = None,
                              example_images: Iterable[ImageInput] | None = None, **fields: Any) -> RankResponse:
        form = {"query": query, "candidates": candidates, "templates": templates, **fields}
        return await self._send(_Operations.rank_candidates(form, image, candidate_images, example_images))

    async def traverse_image(self, image: ImageInput, collection: str | None = None, **fields: Any
                             ) -> TraverseResponse:
        return await self._send(_Operations.traverse_image(image, {"collection": collection, **fields}))

    async def list_collections(self) -> CollectionsResponse:
        return await self._send(_Request("GET", "/v1/collections"))

    async def get_collection(self, name: str, extremes: int = 5) -> CollectionStats:
        return await self._send(_Request("GET", f"/v1/collections/{_seg(name)}", params={"extremes": extremes}))

    async def drop_collection(self, name: str) -> DeletedResponse:
        return await self._send(_Request("DELETE", f"/v1/collections/{_seg(name)}"))

    async def add_text_items(self, name: str, items: Iterable[TextItem | str]) -> AddItemsResponse:
        return await self._send(_Operations.add_text_items(name, items))

    async def add_image_items(self, name: str, images: Iterable[ImageInput], *, ids: Sequence[str] | None = None,
                              metadata: Sequence[dict[str, Any]] | None = None) -> AddItemsResponse:
        return await self._send(_Operations.add_image_items(name, images, ids, metadata))

    async def get_item(self, name: str, item_id: str) -> ItemResponse:
        return await self._send(_Request("GET", f"/v1/collections/{_seg(name)}/items/{_item(item_id)}"))

    async def delete_item(self, name: str, item_id: str) -> DeletedResponse:
        return await self._send(_Request("DELETE", f"/v1/collections/{_seg(name)}/items/{_item(item_id)}"))

    async def item_image(self, name: str, item_id: str) -> ItemImage:
        return await self._send(_Request("GET", f"/v1/collections/{_seg(name)}/items/{_item(item_id)}/image",
                                         expect="image"))

    async def job_roots(self) -> JobRoots:
        return await self._send(_Request("GET", "/v1/jobs/roots"))

    async def list_jobs(self) -> JobsResponse:
        return await self._send(_Request("GET", "/v1/jobs"))

    async def submit_job(self, source: str, collection: str, *, modality: str | None = None, sync: bool = False,
                         **extra: Any) -> JobStatus:
        return await self._send(_Request("POST", "/v1/jobs", json=_body(
            {"source": source, "collection": collection, "modality": modality, "sync": sync, **extra})))

    async def get_job(self, job_id: str) -> JobStatus:
        return await self._send(_Request("GET", f"/v1/jobs/{_seg(job_id)}"))

    async def cancel_job(self, job_id: str) -> JobStatus:
        return await self._send(_Request("DELETE", f"/v1/jobs/{_seg(job_id)}"))

    async def wait_job(self, job_id: str, timeout: float = 3600.0, poll_s: float = 0.5) -> JobStatus:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get_job(job_id)
            if job["state"] in FINISHED_STATES:
                return cast(JobStatus, job)
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout}s")
            await asyncio.sleep(poll_s)
