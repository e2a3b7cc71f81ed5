"""POST /v1/rank: one query against candidates sent with it (zero-shot classification with uncertainty)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from ..deps import LimitsDep, Queries, authorized
from ..errors import InvalidInput
from ..schemas import RANK_HELP, Rank, RankedCandidate, RankResponse, UncertaintyInfo, error_responses
from ..scoring import PROMPT_FILTERS, ensemble_prompts, score_candidates

router = APIRouter(prefix="/v1", tags=["rank"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 413, 422, 429, 503))

PromptFilter = Annotated[str, Form(description="how prompts of a class are filtered by their uncertainty: "
                                               + ", ".join(PROMPT_FILTERS), pattern="^(none|mean_std|most_certain)$")]


@router.post("/rank", response_model=RankResponse, summary="Rank candidates given in the request against one query")
async def rank_candidates(
    queries: Queries, limits: LimitsDep,
    query: Annotated[str | None, Form(description="the query text (or upload `file`)")] = None,
    file: Annotated[UploadFile | None, File(description="the query image (or send `query`)")] = None,
    candidates: Annotated[list[str] | None, Form(description="candidate texts (class names with `templates`)")] = None,
    candidate_files: Annotated[list[UploadFile] | None, File(description="candidate images")] = None,
    templates: Annotated[list[str] | None, Form(
        description="prompt templates with '{}' for the class name, e.g. 'a photo of {}.'")] = None,
    prompt_filter: PromptFilter = "mean_std",
    prompt_coeff: Annotated[float, Form(ge=-10, le=100, description=(
        "mean_std: keep prompts with uncertainty <= mean + coeff*std of their class; "
        "most_certain: keep the coeff least uncertain"))] = 0.0,
    rank: Annotated[Rank, Form(description=RANK_HELP)] = "csd",
) -> RankResponse:
    if (query is None) == (file is None):
        raise InvalidInput("send exactly one query: `query` (text) or `file` (image)")
    if bool(candidates) == bool(candidate_files):
        raise InvalidInput("send candidates as texts (`candidates`) or as images (`candidate_files`), not both")
    if templates and not candidates:
        raise InvalidInput("`templates` apply to text candidates (class names)")

    if query is not None:
        query_batch = await queries.texts([limits.text(query, "query")])
    else:
        query_batch = await queries.images([await limits.image(file)])

    kept: list[list[str]] | None = None
    if candidate_files:
        labels = [upload.filename or f"file {i}" for i, upload in enumerate(candidate_files)]
        candidate_batch = await queries.images(await limits.images(candidate_files, "candidate_files"))
    elif templates:
        labels = limits.texts(candidates, "candidates")
        for template in templates:
            if "{}" not in template:
                raise InvalidInput(f"template {template[:80]!r} has no '{{}}' for the class name")
        prompts = [template.replace("{}", label) for label in labels for template in templates]  # class-major
        limits.texts(prompts, "prompts (candidates x templates)")
        ensemble = ensemble_prompts(await queries.texts(prompts), len(labels), len(templates), prompt_filter,
                                    prompt_coeff)
        candidate_batch = ensemble.embeddings
        kept = [[templates[t].replace("{}", labels[c]) for t in ensemble.kept[c]] for c in range(len(labels))]
    else:
        labels = limits.texts(candidates, "candidates")
        candidate_batch = await queries.texts(labels)

    scores = await run_in_threadpool(score_candidates, query_batch, candidate_batch, queries.logit_scale,
                                     queries.logit_bias)
    order = scores.order(rank)
    results = [RankedCandidate(
        index=int(i), label=labels[i], csd=float(scores.csd[i]), cosine=float(scores.cosine[i]),
        probability=float(scores.probability[i]), class_probability=float(scores.class_probability[i]),
        inclusion=float(scores.inclusion[i]), uncertainty=float(scores.uncertainty[i]),
        prompts_kept=None if kept is None else kept[i]) for i in order]
    return RankResponse(query=UncertaintyInfo(uncertainty=float(query_batch.uncertainty[0])), rank=rank,
                        results=results)
