"""/v1/collections: list, inspect and fill collections; get, delete and show items."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..collection_info import collection_stats, collection_summary, find_item
from ..deps import State, authorized
from ..errors import InvalidInput, PayloadTooLarge, UnknownItem, UnsupportedMediaType
from ..images import labels as upload_labels
from ..ingest import ImageUpload, add_images, add_texts
from ..item_images import locate_item_image, read_item_image
from ..json_bodies import BoundedJsonRoute
from ..schemas import (
    IMAGE_MEDIA_TYPES,
    ITEM_ID_PATTERN,
    ITEM_IMAGE_MEDIA_TYPES,
    AddItemsResponse,
    BrokenCollection,
    CollectionsResponse,
    CollectionStats,
    DeletedResponse,
    ItemResponse,
    TextItemsRequest,
    error_responses,
)
from ..search import percentile
from ..settings import COLLECTION_PATTERN

CollectionName = Annotated[str, Path(pattern=COLLECTION_PATTERN, description="1-64 letters, digits, '_' or '-'")]

router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 404, 409, 413, 422, 429, 503, 507),
                   route_class=BoundedJsonRoute)

_IMAGE_FORM = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1},
        "ids": {"type": "array", "items": {"type": "string", "pattern": ITEM_ID_PATTERN},
                "description": "one id per file (optional; default: a hash of the file's bytes)"},
        "metadata": {"type": "array", "items": {"type": "string"},
                     "description": "one JSON object per file (optional)"},
    },
}
# The JSON body is validated by hand in the route (one route takes JSON or a form), so FastAPI
# does not publish TextItemsRequest itself: ``service.app`` adds it (REFERENCED_MODELS) to components.
_IMAGE_FORM_CONTENT = {"schema": _IMAGE_FORM, "encoding": {"files": {"contentType": IMAGE_MEDIA_TYPES}}}
_ADD_ITEMS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/TextItemsRequest"}},
            "multipart/form-data": _IMAGE_FORM_CONTENT,
        },
    }
}
_ADD_IMAGES_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": _IMAGE_FORM_CONTENT}}}


@router.get("", response_model=CollectionsResponse, summary="All collections with sizes, model and index type")
async def list_collections(state: State) -> CollectionsResponse:
    def summaries():
        out, broken = [], []
        if state.catalog is None:
            return out, broken
        for name in state.collection_names():
            try:
                out.append(collection_summary(name, state.catalog.get(name)))
            except Exception as error:  # unreadable: listed with the reason (and in /readyz)
                broken.append(BrokenCollection(name=name, reason=f"{type(error).__name__}: {error}"))
        broken += [BrokenCollection(name=name, reason=reason) for name, reason in state.catalog.broken().items()]
        return out, sorted(broken, key=lambda entry: entry.name)

    collections, broken = await run_in_threadpool(summaries)
    return CollectionsResponse(collections=collections, broken=broken)


@router.get("/{name}", response_model=CollectionStats,
            summary="One collection: size, uncertainty histogram, most certain and uncertain items")
async def get_collection(name: CollectionName, state: State,
                         extremes: Annotated[int, Query(ge=0, le=100, description="most/least certain items shown")] = 5
                         ) -> CollectionStats:
    index = state.collection(name)
    return await run_in_threadpool(collection_stats, name, index, extremes)


@router.delete("/{name}", response_model=DeletedResponse, summary="Drop a collection and its stored images")
async def drop_collection(name: CollectionName, state: State) -> DeletedResponse:
    state.collection(name)  # 404 / 409 before anything is removed
    await run_in_threadpool(state.catalog.drop, name)
    await run_in_threadpool(state.media.drop, name)
    return DeletedResponse(deleted=name)


@router.post("/{name}/items", response_model=AddItemsResponse, openapi_extra=_ADD_ITEMS_BODY,
             responses=error_responses(415),
             summary="Add items: texts as JSON, or images as uploads (creates the collection on first use)",
             description="One operation for both kinds. Generated clients may prefer `POST .../texts` and "
                         "`POST .../images`, which do the same with one body type each (openapi-python-client "
                         "0.29 emits code that does not import for an operation with two body types).")
async def add_items(name: CollectionName, request: Request, state: State) -> AddItemsResponse:
    state.limits.collection(name)
    content_type = _content_type(request)
    if content_type == "application/json":
        body = await request.body()
        try:
            payload = TextItemsRequest.model_validate_json(body)
        except ValidationError as error:
            raise RequestValidationError(error.errors(include_url=False, include_input=False)) from None
        return await add_texts(state, name, payload.items)
    if content_type == "multipart/form-data":
        return await _add_image_form(name, request, state)
    raise UnsupportedMediaType(f"unsupported content type {content_type or '(none)'!r}: send texts as "
                               "application/json or images as multipart/form-data")


@router.post("/{name}/texts", response_model=AddItemsResponse,
             summary="Add texts (creates the collection on first use)")
async def add_text_items(name: CollectionName, body: TextItemsRequest, state: State) -> AddItemsResponse:
    state.limits.collection(name)
    return await add_texts(state, name, body.items)


@router.post("/{name}/images", response_model=AddItemsResponse, openapi_extra=_ADD_IMAGES_BODY,
             responses=error_responses(415),
             summary="Add images as uploads (creates the collection on first use)")
async def add_image_items(name: CollectionName, request: Request, state: State) -> AddItemsResponse:
    state.limits.collection(name)
    content_type = _content_type(request)
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(f"unsupported content type {content_type or '(none)'!r}: send images as "
                                   "multipart/form-data")
    return await _add_image_form(name, request, state)


async def _add_image_form(name: str, request: Request, state: State) -> AddItemsResponse:
    """Images of a multipart form into the collection, decoded one at a time within the memory budgets."""
    files, ids, metadata = await _image_form(request, state)
    async with state.images.prepared(files, state.queries.image_size if state.queries else None,
                                     upload_labels("files", len(files))) as prepared:
        uploads = [ImageUpload(image, ids[i] if ids else None, metadata[i] if metadata else {})
                   for i, image in enumerate(prepared)]
        return await add_images(state, name, uploads)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _image_form(request: Request, state: State) -> tuple[list[UploadFile], list[str], list[dict[str, Any]]]:
    """The uploads, ids and metadata of an image form, checked before any image is read."""
    limits = state.limits
    form = await request.form(max_files=state.settings.max_files, max_fields=3 * state.settings.max_files + 8)
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if len(files) != len(form.getlist("files")):
        raise InvalidInput("files: every entry must be an uploaded file")
    limits.file_count(files)
    ids = [str(value) for value in form.getlist("ids")]
    metadata_fields = [str(value) for value in form.getlist("metadata")]
    for label, values in (("ids", ids), ("metadata", metadata_fields)):
        if values and len(values) != len(files):
            raise InvalidInput(f"{label}: give one per file ({len(files)}), got {len(values)}")
    limit = state.settings.max_metadata_bytes
    return files, ids, [_parse_metadata(text, i, limit) for i, text in enumerate(metadata_fields)]


def _parse_metadata(text: str, i: int, max_bytes: int) -> dict[str, Any]:
    if not text.strip():
        return {}
    # refused before parsing, as JSON bodies are: no accepted metadata is longer than this even with
    # every character written as a \uXXXX escape (the limit counts its UTF-8 bytes once parsed)
    if len(text) > 6 * max_bytes:
        raise PayloadTooLarge(f"metadata[{i}]: {len(text)} characters of JSON exceeds the limit of {max_bytes} bytes")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"metadata[{i}]: not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"metadata[{i}]: must be a JSON object")
    return value


# Item ids may contain '/' (a folder job names items by their relative path), hence the
# ``path`` convertor; the image route comes first so ".../image" is never read as an id.
_IMAGE_RESPONSE = {200: {
    "description": "the image bytes as stored, with their media type (application/octet-stream when it "
                   "cannot be told)",
    "content": {media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in ITEM_IMAGE_MEDIA_TYPES}}}


@router.get("/{name}/items/{item_id:path}/image", name="item_image", summary="The stored image of an item",
            response_class=Response, responses=_IMAGE_RESPONSE)
async def item_image(name: CollectionName, item_id: str, state: State) -> Response:
    index = state.collection(name, "image")
    item = await run_in_threadpool(find_item, index, item_id)
    image = None
    if item is not None:  # uploads from the media store; job items from their source file
        image = await run_in_threadpool(read_item_image, state, name, item, state.settings.max_upload_bytes)
    if image is None:
        raise UnknownItem(f"collection {name!r} has no stored image for item {item_id!r}")
    return Response(content=image.data, media_type=image.media_type,
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{name}/items/{item_id:path}", response_model=ItemResponse, summary="One item: metadata and uncertainty")
async def get_item(name: CollectionName, item_id: str, state: State, request: Request) -> ItemResponse:
    index = state.collection(name)
    item = await run_in_threadpool(find_item, index, item_id)
    if item is None:
        raise UnknownItem(f"collection {name!r} has no item {item_id!r}")
    uncertainty = None if item.uncertainty is None else float(item.uncertainty)  # None: a deterministic model's
    image_url = None
    if index.info.modality == "image" and await run_in_threadpool(locate_item_image, state, name, item):
        image_url = str(request.url_for("item_image", name=name, item_id=item_id).path)
    return ItemResponse(collection=name, id=item_id, modality=index.info.modality, uncertainty=uncertainty,
                        percentile=await run_in_threadpool(percentile, index, uncertainty),
                        metadata=dict(item.metadata or {}), image_url=image_url)


@router.delete("/{name}/items/{item_id:path}", response_model=DeletedResponse, summary="Delete one item")
async def delete_item(name: CollectionName, item_id: str, state: State) -> DeletedResponse:
    index = state.collection(name)
    if await run_in_threadpool(find_item, index, item_id) is None:
        raise UnknownItem(f"collection {name!r} has no item {item_id!r}")
    await run_in_threadpool(index.delete, [item_id])
    await run_in_threadpool(state.media.delete, name, item_id)
    return DeletedResponse(deleted=item_id)
