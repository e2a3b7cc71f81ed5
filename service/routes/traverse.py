"""POST /v1/traverse/image: captions from the most specific match of an image to the most inclusive."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from ..deps import Images, LimitsDep, Queries, State, authorized
from ..errors import InvalidInput
from ..schemas import TraverseResponse, UncertaintyInfo, error_responses, image_parts
from ..search import percentile
from ..settings import COLLECTION_PATTERN, MAX_K
from ..state import DEMO_COLLECTIONS
from ..traversal import METHODS, by_inclusion, walk

router = APIRouter(prefix="/v1/traverse", tags=["traverse"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 404, 409, 413, 422, 429, 503))


@router.post("/image", response_model=TraverseResponse, openapi_extra=image_parts("file"),
             summary="Captions of a text collection, from the most specific match of the image to the most inclusive")
async def traverse_image(
    state: State, queries: Queries, limits: LimitsDep, images: Images,
    file: Annotated[UploadFile, File(description="the image")],
    collection: Annotated[str, Form(pattern=COLLECTION_PATTERN,
                                    description="a text collection")] = DEMO_COLLECTIONS["text"],
    method: Annotated[str, Form(pattern="^(walk|inclusion)$", description=(
        "walk: the paper's HierarCaps walk from the best caption to the most inclusive one; "
        "inclusion: captions true of the image with at least min_probability, least uncertain first"))] = "walk",
    k: Annotated[int, Form(ge=1, le=MAX_K, description="most captions returned")] = 10,
    steps: Annotated[int, Form(ge=2, le=200, description="walk: steps from start to root")] = 50,
    min_probability: Annotated[float, Form(ge=0.0, le=1.0, description=(
        "inclusion: least calibrated probability that the caption is true of the image; for a model without a "
        "calibrator, least pair_probability (the model's raw training probability, which general captions "
        "rarely reach)"))] = 0.5,
) -> TraverseResponse:
    if method not in METHODS:
        raise InvalidInput(f"method must be one of {', '.join(METHODS)}")
    k = limits.k(k)
    queries.require_uncertainty("the traversal (it follows the inclusion test)")
    index = state.collection(collection, "text")
    async with images.prepared([file], queries.image_size, ["file"]) as prepared:
        image = await queries.images(prepared)
    if method == "walk":
        empty = state.cache.get("empty_caption")
        if empty is None:  # the empty caption is the most general text the model knows
            empty = state.cache["empty_caption"] = await queries.texts([""])
        captions = await run_in_threadpool(walk, index, image, empty, steps, queries.pair_logit, queries.calibrator)
    else:
        captions = await run_in_threadpool(by_inclusion, index, image, max(k, 50), min_probability,
                                           queries.pair_logit, queries.calibrator)
    uncertainty = float(image.uncertainty[0])
    _, image_collection = await run_in_threadpool(state.default_collection, "image", None)
    return TraverseResponse(
        collection=collection, method=method, captions=captions[:k], calibrated=queries.calibrator is not None,
        query=UncertaintyInfo(uncertainty=uncertainty, percentile=await run_in_threadpool(
            percentile, image_collection, uncertainty)))
