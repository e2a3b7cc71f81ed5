"""Pages of search results: filters, paging by offset or cursor, min_probability and collapsed duplicates.

The result list of a search is the collection's items that match its filter, in the index's
total order (score, then id), without the excluded ids (the query item itself) and the results
below ``min_probability``, with near-duplicates folded into the best-ranked of them
(``indexer.duplicates``). A page is the slice [offset, offset + k) of that list. Every page is
computed from the top: the index is asked for the first n results, n doubling until the page is
full or the list ends, up to the indexer's MAX_K. So pages agree with each other as long as the
collection does not change, and a cursor is no more than the next offset, tied to its search.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from indexer import MAX_K as FETCH_CAP
from indexer import filters
from indexer.duplicates import collapse
from indexer.errors import InvalidInputError
from models.calibration import Calibrator
from models.gaussian import GaussianBatch

from .errors import InvalidFilter, InvalidInput, NotCalibrated
from .schemas import SearchResponse
from .scoring import inclusion_direction
from .search import probability_scorer, respond


@dataclass(frozen=True)
class PageSpec:
    k: int
    offset: int
    rank: str
    modality: str  # the query's
    condition: filters.Filter | None = None
    min_probability: float | None = None
    collapse: float | None = None  # the duplicate threshold, or None for no collapsing
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Page:
    hits: list[Any]  # indexer Hits, best first
    duplicates: list[list[str]]  # per hit: the ids folded into it
    has_more: bool  # the result list goes on after this page


async def ranked_page(searches: Any, index: Any, query: GaussianBatch, spec: PageSpec,
                      calibrator: Calibrator | None = None) -> Page:
    """The page ``spec`` asks for (see the module docstring); ``min_probability`` cuts on the calibrated
    probability, which the caller has made sure exists (``search.check_probability_request``)."""
    want = spec.offset + spec.k
    n = min(FETCH_CAP, want + 1 + len(spec.exclude))  # one more than the page: is there a next one?
    if spec.collapse is not None or spec.min_probability is not None:
        n = min(FETCH_CAP, 2 * n)
    query_uncertainty = None if query.logvar is None else float(query.uncertainty[0])  # None: a model's point
    scorer = probability_scorer(calibrator, spec.modality, index.info.modality, query_uncertainty)
    while True:
        hits = await searches.search(index, query, n, spec.rank, spec.modality, calibrator,
                                     inclusion_direction(spec.modality, index.info.modality), spec.condition)
        ended = len(hits) < n
        kept = [hit for hit in hits if hit.id not in spec.exclude]
        if spec.min_probability is not None and kept:
            if scorer is None:
                raise NotCalibrated("min_probability needs a calibrated probability for this search")
            probability = scorer.probability(np.array([h.cosine for h in kept]),
                                             np.array([h.uncertainty for h in kept]))
            kept = [hit for hit, p in zip(kept, np.atleast_1d(probability), strict=True) if p >= spec.min_probability]
        if spec.collapse is not None and kept:
            means = await run_in_threadpool(index.means, [hit.id for hit in kept])
            positions, folded = collapse(means, spec.collapse)
            results = [kept[p] for p in positions]
            duplicates = [[kept[q].id for q in group] for group in folded]
        else:
            results, duplicates = kept, [[] for _ in kept]
        if len(results) > want or ended or n >= FETCH_CAP:
            break
        n = min(FETCH_CAP, 2 * n)
    return Page(results[spec.offset:want], duplicates[spec.offset:want], has_more=len(results) > want)


# ----------------------------------------------------------------------------- request handling

def parse_filter(raw: Any) -> filters.Filter | None:
    """A checked filter (JSON form) or None; a malformed one is a 422 ``invalid_filter`` saying what is wrong."""
    if raw is None:
        return None
    try:
        return filters.parse(raw)
    except InvalidInputError as error:
        raise InvalidFilter(str(error)) from None


def parse_filter_text(text: str | None) -> filters.Filter | None:
    """A filter sent as JSON text (a multipart form field)."""
    if text is None or not text.strip():
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidFilter(f"filter: not valid JSON ({error.msg})") from None
    return parse_filter(raw)


def fingerprint(*parts: Any) -> str:
    """What identifies one search across its pages (query, collection, rank, filter, cuts, collapse)."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def encode_cursor(offset: int, search: str) -> str:
    raw = json.dumps({"o": offset, "s": search}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, search: str) -> int:
    """The offset a cursor continues from; 422 when it is not one of ours or belongs to another search."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset, owner = data["o"], data["s"]
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or not isinstance(owner, str):
            raise ValueError
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor: not a cursor this service issued (pass next_cursor as it came)") from None
    if owner != search:
        raise InvalidInput("cursor: it belongs to another search (the query, collection, rank, filter, "
                           "min_probability or duplicate settings differ)")
    return offset


async def answer(state: Any, queries: Any, *, name: str, index: Any, options: Any, query: GaussianBatch,
                 query_key: Any, modality: str, exclude: frozenset[str] = frozenset()) -> SearchResponse:
    """The response to a search of collection ``name`` with one encoded ``query``.

    ``options`` carries the SearchOptions fields; ``query_key`` identifies the query for cursors;
    ``modality`` is the query's (for the uncertainty percentile's reference collection).
    """
    max_k = state.settings.max_k
    k = state.limits.k(options.k)
    condition = parse_filter(options.filter) if not isinstance(options.filter, filters.Condition | filters.Group) \
        else options.filter
    threshold = options.duplicate_threshold if options.collapse_duplicates else None
    search = fingerprint(query_key, name, options.rank, None if condition is None else filters.canonical(condition),
                         options.min_probability, threshold, sorted(exclude))
    if options.cursor is not None:
        if options.offset:
            raise InvalidInput("give offset or cursor, not both")
        offset = decode_cursor(options.cursor, search)
        if offset >= max_k:
            raise InvalidInput(f"cursor: the page would start at {offset}, beyond max_k ({max_k})")
        k = min(k, max_k - offset)
    else:
        offset = options.offset
        if offset + k > max_k:
            raise InvalidInput(f"offset + k must be at most max_k ({max_k}), not {offset} + {k}; page with a "
                               "smaller k")
    spec = PageSpec(k, offset, options.rank, modality, condition, options.min_probability, threshold, exclude)
    page = await ranked_page(state.searches, index, query, spec, queries.calibrator)
    matched = None if condition is None else await run_in_threadpool(index.count_matching, condition)
    reference = await run_in_threadpool(state.percentile_reference, modality, name, index)
    response = respond(name, index, page.hits, query, options.rank, queries.pair_logit, None, queries.model_id,
                       reference, queries.calibrator, modality, queries.family)
    results = [hit.model_copy(update={"duplicates": ids})
               for hit, ids in zip(response.results, page.duplicates, strict=True)]
    following = offset + len(page.hits)
    return response.model_copy(update={
        "results": results, "offset": offset, "matched": matched,
        "collapsed": sum(len(ids) for ids in page.duplicates),
        "next_cursor": encode_cursor(following, search) if page.has_more and following < max_k else None})
