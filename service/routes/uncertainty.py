"""POST /v1/uncertainty/{text,image}: how general or ambiguous inputs are, without searching."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form
from starlette.concurrency import run_in_threadpool

from models.encoder import GaussianBatch

from ..deps import Images, LimitsDep, Queries, State, authorized
from ..images import labels
from ..json_bodies import BoundedJsonRoute
from ..schemas import (
    ImageFiles,
    TextsUncertaintyRequest,
    UncertaintyItem,
    UncertaintyResponse,
    error_responses,
    image_parts,
)
from ..search import percentile
from ..settings import COLLECTION_PATTERN

router = APIRouter(prefix="/v1/uncertainty", tags=["uncertainty"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 404, 409, 413, 422, 429, 503),
                   route_class=BoundedJsonRoute)


def _describe(batch: GaussianBatch, name: str | None, index) -> UncertaintyResponse:
    values = batch.uncertainty
    return UncertaintyResponse(
        collection=name,
        items=[UncertaintyItem(index=i, uncertainty=float(v), percentile=percentile(index, float(v)))
               for i, v in enumerate(values)])


@router.post("/text", response_model=UncertaintyResponse, summary="Uncertainty of texts")
async def text_uncertainty(body: TextsUncertaintyRequest, state: State, queries: Queries, limits: LimitsDep
                           ) -> UncertaintyResponse:
    texts = limits.texts(body.texts)
    queries.require_uncertainty("/v1/uncertainty")
    name, index = await run_in_threadpool(state.default_collection, "text", body.collection)
    batch = await queries.texts(texts)
    return await run_in_threadpool(_describe, batch, name, index)


@router.post("/image", response_model=UncertaintyResponse, openapi_extra=image_parts("files"),
             summary="Uncertainty of uploaded images")
async def image_uncertainty(
    state: State, queries: Queries, limits: LimitsDep, images: Images,
    files: ImageFiles,
    collection: Annotated[str | None, Form(pattern=COLLECTION_PATTERN,
                                           description="collection for percentiles")] = None,
) -> UncertaintyResponse:
    queries.require_uncertainty("/v1/uncertainty")
    name, index = await run_in_threadpool(state.default_collection, "image", collection)
    limits.file_count(files)
    async with images.prepared(files, queries.image_size, labels("files", len(files))) as prepared:
        batch = await queries.images(prepared)
    return await run_in_threadpool(_describe, batch, name, index)
