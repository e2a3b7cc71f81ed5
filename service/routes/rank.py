"""POST /v1/rank: one query against candidates sent with it (zero-shot classification with uncertainty)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File
from starlette.concurrency import run_in_threadpool

from ..deps import LimitsDep, Queries, authorized
from ..schemas import RankedCandidate, RankForm, RankResponse, UncertaintyInfo, error_responses, image_parts
from ..scoring import ensemble_prompts, score_candidates

router = APIRouter(prefix="/v1", tags=["rank"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 413, 422, 429, 503))


# File(): a form model holding uploads is read as multipart/form-data.
@router.post("/rank", response_model=RankResponse, openapi_extra=image_parts("file", "candidate_files"),
             summary="Rank candidates given in the request against one query")
async def rank_candidates(form: Annotated[RankForm, File()], queries: Queries, limits: LimitsDep) -> RankResponse:
    if form.rank == "inclusion":
        queries.require_uncertainty("rank=inclusion (the inclusion test)")
    if form.query is not None:
        query_batch = await queries.texts([limits.text(form.query, "query")])
    else:
        query_batch = await queries.images([await limits.image(form.file)])

    kept: list[list[str]] | None = None
    if form.candidate_files:
        labels = [upload.filename or f"file {i}" for i, upload in enumerate(form.candidate_files)]
        candidate_batch = await queries.images(await limits.images(form.candidate_files, "candidate_files"))
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

    scores = await run_in_threadpool(score_candidates, query_batch, candidate_batch, queries.pair_logit)
    order = scores.order(form.rank)
    results = [RankedCandidate(
        index=int(i), label=labels[i], csd=float(scores.csd[i]), cosine=float(scores.cosine[i]),
        probability=float(scores.probability[i]), class_probability=float(scores.class_probability[i]),
        inclusion=_optional(scores.inclusion, i), uncertainty=_optional(scores.uncertainty, i),
        prompts_kept=None if kept is None else kept[i]) for i in order]
    query_uncertainty = None if query_batch.logvar is None else float(query_batch.uncertainty[0])
    return RankResponse(query=UncertaintyInfo(uncertainty=query_uncertainty), rank=form.rank, results=results)


def _optional(values, i: int) -> float | None:
    """values[i] as a float; None when the model is deterministic (no such values)."""
    return None if values is None else float(values[i])
