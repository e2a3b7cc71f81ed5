"""POST /v1/rank: one query against candidates sent with it (zero-shot classification with uncertainty)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File
from starlette.concurrency import run_in_threadpool

from ..batching import split_gaussians
from ..deps import Images, LimitsDep, Queries, authorized
from ..images import labels as upload_labels
from ..schemas import RankedCandidate, RankForm, RankResponse, UncertaintyInfo, error_responses, image_parts
from ..scoring import ensemble_prompts, inclusion_direction, score_candidates

router = APIRouter(prefix="/v1", tags=["rank"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 413, 422, 429, 503))


# File(): a form model holding uploads is read as multipart/form-data.
@router.post("/rank", response_model=RankResponse, openapi_extra=image_parts("file", "candidate_files"),
             summary="Rank candidates given in the request against one query")
async def rank_candidates(form: Annotated[RankForm, File()], queries: Queries, limits: LimitsDep,
                          images: Images) -> RankResponse:
    if form.candidate_files:
        limits.file_count(form.candidate_files, "candidate_files")
    # every image of the request (query and candidates) is decoded within one reservation of the budget
    uploads = ([form.file] if form.file is not None else []) + list(form.candidate_files or [])
    names = (["file"] if form.file is not None else []) + upload_labels("candidate_files",
                                                                        len(form.candidate_files or []))
    image_batch = None
    if uploads:
        async with images.prepared(uploads, queries.image_size, names) as prepared:
            image_batch = await queries.images(prepared)
    if form.query is not None:
        query_batch = await queries.texts([limits.text(form.query, "query")])
    else:
        query_batch = split_gaussians(image_batch, 0, 1)

    kept: list[list[str]] | None = None
    if form.candidate_files:
        labels = [upload.filename or f"file {i}" for i, upload in enumerate(form.candidate_files)]
        skip = 1 if form.file is not None else 0
        candidate_batch = split_gaussians(image_batch, skip, skip + len(form.candidate_files))
    elif form.templates:
        labels = limits.texts(form.candidates, "candidates")
        templates = form.templates
        prompts = [template.replace("{}", label) for label in labels for template in templates]  # class-major
        limits.texts(prompts, "prompts (candidates x templates)")
        ensemble = ensemble_prompts(await queries.texts(prompts), len(labels), len(templates), form.prompt_filter,
                                    form.prompt_coeff)
        candidate_batch = ensemble.embeddings
        kept = [[templates[t].replace("{}", labels[c]) for t in ensemble.kept[c]] for c in range(len(labels))]
    else:
        labels = limits.texts(form.candidates, "candidates")
        candidate_batch = await queries.texts(labels)

    direction = inclusion_direction("text" if form.query is not None else "image",
                                    "image" if form.candidate_files else "text")
    scores = await run_in_threadpool(score_candidates, query_batch, candidate_batch, queries.logit_scale,
                                     queries.logit_bias, direction)
    order = scores.order(form.rank)
    results = [RankedCandidate(
        index=int(i), label=labels[i], csd=float(scores.csd[i]), cosine=float(scores.cosine[i]),
        probability=float(scores.probability[i]), class_probability=float(scores.class_probability[i]),
        inclusion=float(scores.inclusion[i]), uncertainty=float(scores.uncertainty[i]),
        prompts_kept=None if kept is None else kept[i]) for i in order]
    return RankResponse(query=UncertaintyInfo(uncertainty=float(query_batch.uncertainty[0])), rank=form.rank,
                        results=results)
