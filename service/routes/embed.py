"""POST /v1/embed/{text,image}: the Gaussian embeddings themselves (mean, logvar, uncertainty)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from models.encoder import GaussianBatch

from ..deps import Images, LimitsDep, Queries, authorized
from ..images import labels
from ..json_bodies import BoundedJsonRoute
from ..schemas import EmbeddingItem, EmbeddingResponse, ImageFiles, TextsRequest, error_responses, image_parts

router = APIRouter(prefix="/v1/embed", tags=["embed"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 413, 422, 429, 503),
                   route_class=BoundedJsonRoute)


def _embeddings(batch: GaussianBatch, queries) -> EmbeddingResponse:
    points = batch.logvar is None  # a deterministic model: no variances
    return EmbeddingResponse(
        model_id=queries.model_id, model_family=queries.family, dim=queries.embed_dim,
        items=[EmbeddingItem(index=i, mean=batch.mean[i].tolist(), logvar=None if points else batch.logvar[i].tolist(),
                             uncertainty=None if points else float(u)) for i, u in enumerate(batch.uncertainty)])


@router.post("/text", response_model=EmbeddingResponse, summary="Embed texts as Gaussians")
async def embed_text(body: TextsRequest, queries: Queries, limits: LimitsDep) -> EmbeddingResponse:
    return _embeddings(await queries.texts(limits.texts(body.texts)), queries)


@router.post("/image", response_model=EmbeddingResponse, openapi_extra=image_parts("files"),
             summary="Embed uploaded images as Gaussians")
async def embed_image(queries: Queries, limits: LimitsDep, images: Images, files: ImageFiles) -> EmbeddingResponse:
    limits.file_count(files)
    async with images.prepared(files, queries.image_size, labels("files", len(files))) as prepared:
        batch = await queries.images(prepared)
    return _embeddings(batch, queries)
