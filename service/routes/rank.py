"""POST /v1/rank: one query against candidates sent with it, or against the items of a collection that match
a metadata filter (zero-shot classification with uncertainty)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File
from starlette.concurrency import run_in_threadpool

from models.gaussian import GaussianBatch

from ..deps import LimitsDep, Queries, State, authorized
from ..pages import parse_filter_text
from ..schemas import RankedCandidate, RankForm, RankResponse, UncertaintyInfo, error_responses, image_parts
from ..scoring import ensemble_prompts, score_candidates

router = APIRouter(prefix="/v1", tags=["rank"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 404, 409, 413, 422, 429, 503))

_RANK_FORM = image_parts("file", "candidate_files")
_RANK_FORM["requestBody"]["content"]["multipart/form-data"]["encoding"]["filter"] = {"contentType": "application/json"}


# File(): a form model holding uploads is read as multipart/form-data.
@router.post("/rank", response_model=RankResponse, openapi_extra=_RANK_FORM,
             summary="Rank candidates given in the request, or a collection's items matching a filter, against one "
                     "query")
async def rank_candidates(form: Annotated[RankForm, File()], state: State, queries: Queries,
                          limits: LimitsDep) -> RankResponse:
    if form.query is not None:
        query_batch = await queries.texts([limits.text(form.query, "query")])
    else:
        query_batch = await queries.images([await limits.image(form.file)])

    condition = parse_filter_text(form.filter)
    index = state.collection(form.collection) if form.collection is not None else None
    kept: list[list[str]] | None = None
    ids: list[str] | None = None
    if index is not None:
        items = await run_in_threadpool(index.matching, condition, state.settings.max_k)
        if not items:
            return RankResponse(query=UncertaintyInfo(uncertainty=float(query_batch.uncertainty[0])), rank=form.rank,
                                results=[])
        ids = [item.id for item in items]
        labels = [str((item.metadata or {}).get("text") or item.id) for item in items]
        candidate_batch = GaussianBatch(np.stack([item.mean for item in items]).astype(np.float32),
                                        np.stack([item.logvar for item in items]).astype(np.float32))
    elif form.candidate_files:
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
        inclusion=float(scores.inclusion[i]), uncertainty=float(scores.uncertainty[i]),
        prompts_kept=None if kept is None else kept[i], id=None if ids is None else ids[i]) for i in order]
    return RankResponse(query=UncertaintyInfo(uncertainty=float(query_batch.uncertainty[0])), rank=form.rank,
                        results=results)
