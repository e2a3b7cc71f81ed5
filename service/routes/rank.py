"""POST /v1/rank: one query against candidates sent with it, or against the items of a collection that match a
metadata filter (zero- and few-shot classification with uncertainty)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File
from starlette.concurrency import run_in_threadpool

from models.encoder import GaussianBatch

from ..batching import split_gaussians
from ..deps import Images, LimitsDep, Queries, State, authorized
from ..errors import UnknownItem
from ..images import labels as upload_labels
from ..pages import parse_filter_text
from ..schemas import RankedCandidate, RankForm, RankResponse, UncertaintyInfo, error_responses, image_parts
from ..scoring import PromptEnsemble, ensemble_prompts, inclusion_direction, reweight_prompts, score_candidates
from ..search import require_calibration

router = APIRouter(prefix="/v1", tags=["rank"], dependencies=[Depends(authorized)],
                   responses=error_responses(401, 404, 409, 413, 422, 429, 503))


async def _examples(form: RankForm, labels: list[str], state, limits, uploaded: GaussianBatch | None
                    ) -> dict[int, GaussianBatch]:
    """BPRW's labelled examples: class index -> the Gaussians of its example images (``uploaded``: the encoded
    ``example_files``, in order; and indexed items named by ``example_ids``)."""
    by_class: dict[int, list[GaussianBatch]] = {}
    position = {label: i for i, label in enumerate(labels)}
    if uploaded is not None:
        batch = uploaded
        for row, label in enumerate(form.example_labels):
            by_class.setdefault(position[label], []).append(GaussianBatch(batch.mean[row:row + 1],
                                                                          batch.logvar[row:row + 1]))
    if form.example_ids:
        limits.file_count(form.example_ids, "example_ids")
        index = state.collection(form.example_collection, "image")

        def read() -> list:
            return [index.get(limits.item_id(item_id)) for item_id in form.example_ids]

        items = await run_in_threadpool(read)
        for item_id, item, label in zip(form.example_ids, items, form.example_id_labels, strict=True):
            if item is None:
                raise UnknownItem(f"no item {item_id!r} in collection {form.example_collection!r}")
            by_class.setdefault(position[label], []).append(
                GaussianBatch(np.asarray(item.mean, np.float32)[None], np.asarray(item.logvar, np.float32)[None]))
    return {c: GaussianBatch.concat(parts, parts[0].mean.shape[1]) for c, parts in by_class.items()}


_RANK_FORM = image_parts("file", "candidate_files", "example_files")
# a filter (for `collection`) is JSON: a part of type application/json
_RANK_FORM["requestBody"]["content"]["multipart/form-data"]["encoding"]["filter"] = {"contentType": "application/json"}


# File(): a form model holding uploads is read as multipart/form-data.
@router.post("/rank", response_model=RankResponse, openapi_extra=_RANK_FORM,
             summary="Rank candidates given in the request, or a collection's items matching a filter, against one "
                     "query")
async def rank_candidates(form: Annotated[RankForm, File()], state: State, queries: Queries, limits: LimitsDep,
                          images: Images) -> RankResponse:
    if form.rank == "inclusion":
        queries.require_uncertainty("rank=inclusion (the inclusion test)")
    if form.prompt_filter == "bprw":
        queries.require_uncertainty("prompt_filter=bprw (prompts as Gaussian mixture components)")
    condition = parse_filter_text(form.filter)
    index = state.collection(form.collection) if form.collection is not None else None
    query_modality = "text" if form.query is not None else "image"
    candidate_modality = index.info.modality if index is not None else "image" if form.candidate_files else "text"
    calibrator = queries.calibrator
    if form.rank == "probability":
        require_calibration(calibrator, query_modality, candidate_modality, "rank=probability",
                            f"the query and the candidates are both {query_modality}s")
    if form.candidate_files:
        limits.file_count(form.candidate_files, "candidate_files")
    if form.example_files:
        limits.file_count(form.example_files, "example_files")
    # every image of the request (query, candidates, examples) is decoded within one reservation of the budget
    query_files = [form.file] if form.file is not None else []
    candidate_files, example_files = list(form.candidate_files or []), list(form.example_files or [])
    uploads = query_files + candidate_files + example_files
    names = (["file"] * len(query_files) + upload_labels("candidate_files", len(candidate_files))
             + upload_labels("example_files", len(example_files)))
    image_batch = None
    if uploads:
        async with images.prepared(uploads, queries.image_size, names) as prepared:
            image_batch = await queries.images(prepared)
    first_example = len(query_files) + len(candidate_files)
    example_batch = None if not example_files else split_gaussians(image_batch, first_example, len(uploads))
    if form.query is not None:
        query_batch = await queries.texts([limits.text(form.query, "query")])
    else:
        query_batch = split_gaussians(image_batch, 0, 1)

    ensemble: PromptEnsemble | None = None
    examples: dict[int, GaussianBatch] = {}
    ids: list[str] | None = None
    if index is not None:
        items = await run_in_threadpool(index.matching, condition, state.settings.max_k)
        if not items:
            query_uncertainty = None if query_batch.logvar is None else float(query_batch.uncertainty[0])
            return RankResponse(query=UncertaintyInfo(uncertainty=query_uncertainty), rank=form.rank, results=[],
                                calibrated=False)
        ids = [item.id for item in items]
        labels = [str((item.metadata or {}).get("text") or item.id) for item in items]
        points = any(item.logvar is None for item in items)  # a deterministic collection holds points
        logvar = None if points else np.stack([item.logvar for item in items]).astype(np.float32)
        candidate_batch = GaussianBatch(np.stack([item.mean for item in items]).astype(np.float32), logvar)
    elif form.candidate_files:
        labels = [upload.filename or f"file {i}" for i, upload in enumerate(form.candidate_files)]
        skip = 1 if form.file is not None else 0
        candidate_batch = split_gaussians(image_batch, skip, skip + len(form.candidate_files))
    elif form.templates:
        labels = limits.texts(form.candidates, "candidates")
        templates = form.templates
        prompts = [template.replace("{}", label) for label in labels for template in templates]  # class-major
        limits.texts(prompts, "prompts (candidates x templates)")
        prompt_batch = await queries.texts(prompts)
        if form.prompt_filter == "bprw":
            examples = await _examples(form, labels, state, limits, example_batch)
            ensemble = await run_in_threadpool(reweight_prompts, prompt_batch, len(labels), len(templates), examples,
                                               form.bprw_alpha, form.bprw_samples)
        else:
            ensemble = ensemble_prompts(prompt_batch, len(labels), len(templates), form.prompt_filter,
                                        form.prompt_coeff)
        candidate_batch = ensemble.embeddings
    else:
        labels = limits.texts(form.candidates, "candidates")
        candidate_batch = await queries.texts(labels)

    scores = await run_in_threadpool(score_candidates, query_batch, candidate_batch, queries.pair_logit, calibrator,
                                     query_modality, candidate_modality,
                                     inclusion_direction(query_modality, candidate_modality))
    probability = scores.probability
    results = []
    for i in scores.order(form.rank):
        kept = None if ensemble is None else [form.templates[t].replace("{}", labels[i]) for t in ensemble.kept[i]]
        bprw = ensemble is not None and ensemble.weights is not None
        results.append(RankedCandidate(
            index=int(i), label=labels[i], csd=float(scores.csd[i]), cosine=float(scores.cosine[i]),
            probability=None if probability is None else float(probability[i]),
            pair_probability=float(scores.pair_probability[i]), class_probability=float(scores.class_probability[i]),
            inclusion=_optional(scores.inclusion, i), uncertainty=_optional(scores.uncertainty, i), prompts_kept=kept,
            prompt_weights=ensemble.weights[i] if bprw else None,
            examples=len(examples.get(int(i), ())) if bprw else None, id=None if ids is None else ids[i]))
    query_uncertainty = None if query_batch.logvar is None else float(query_batch.uncertainty[0])
    return RankResponse(query=UncertaintyInfo(uncertainty=query_uncertainty), rank=form.rank, results=results,
                        calibrated=probability is not None)


def _optional(values, i: int) -> float | None:
    """values[i] as a float; None when the model is deterministic (no such values)."""
    return None if values is None else float(values[i])
