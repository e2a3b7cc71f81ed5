"""Checks for everything that crosses the indexer's boundary; each failure is an ``InvalidInputError``.

Checks run before any state changes, so a refused call leaves the collection untouched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.gaussian import uncertainty

from .config import (
    MAX_ID_BYTES,
    MAX_METADATA_BYTES,
    MAX_QUERIES,
    MODALITIES,
    NAME_PATTERN,
    UNIT_NORM_TOLERANCE,
    IndexSpec,
)
from .errors import InvalidInputError

MAX_DIM = 16384  # embedding dimensions a collection may have


@dataclass(frozen=True)
class NewCollection:
    """What ``create`` was asked for, checked (every backend's ``create`` takes the same arguments)."""

    name: str
    modality: str
    dim: int
    model_id: str
    spec: IndexSpec
    model_family: str | None
    deterministic: bool


def new_collection(name: Any, modality_: Any, dim: Any, model_id: Any, spec: Any, model_family: Any,
                   deterministic: Any) -> NewCollection:
    """Check a collection's description before anything is created; InvalidInputError otherwise."""
    name = collection_name(name)
    modality_ = modality(modality_)
    dim = positive_int(dim, "dim", MAX_DIM)
    if not isinstance(model_id, str) or not model_id or len(model_id) > 512:
        raise InvalidInputError("model_id must be a non-empty string of at most 512 characters")
    if model_family is not None and (not isinstance(model_family, str) or not model_family.isidentifier()
                                     or len(model_family) > 64):
        raise InvalidInputError(f"model_family must be a short identifier such as 'prolip', not {model_family!r}")
    if not isinstance(deterministic, bool):
        raise InvalidInputError(f"deterministic must be true or false, not {deterministic!r}")
    if spec is None:
        spec = IndexSpec()
    elif isinstance(spec, dict):
        spec = IndexSpec.from_dict(spec)
    elif not isinstance(spec, IndexSpec):
        raise InvalidInputError(f"spec must be an IndexSpec or a dict, not {type(spec).__name__}")
    return NewCollection(name, modality_, dim, model_id, spec, model_family, deterministic)


def collection_name(name: Any) -> str:
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise InvalidInputError(f"collection names are 1-64 characters of A-Z a-z 0-9 _ -, not {name!r}")
    return name


def modality(value: Any) -> str:
    if value not in MODALITIES:
        raise InvalidInputError(f"modality must be one of {', '.join(MODALITIES)}, not {value!r}")
    return value


def positive_int(value: Any, what: str, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{what} must be a positive integer, not {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidInputError(f"{what} must be at most {maximum}, not {value}")
    return int(value)


def item_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"ids must be non-empty strings, not {value!r}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(f"id {value!r} is not valid Unicode (lone surrogate)") from None
    if size > MAX_ID_BYTES:
        raise InvalidInputError(f"id {value[:40]!r}... is {size} bytes; the limit is {MAX_ID_BYTES}")
    return value


def item_ids(values: Any, *, unique: bool = True) -> list[str]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise InvalidInputError(f"ids must be a list of strings, not {type(values).__name__}")
    ids = [item_id(v) for v in values]
    if unique and len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))
        raise InvalidInputError(f"id {duplicate!r} appears more than once in one call")
    return ids


def _float_matrix(value: Any, what: str, dim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise InvalidInputError(f"{what} must be a floating-point array, not dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != dim:
        raise InvalidInputError(f"{what} must have shape [N, {dim}], not {list(array.shape)}")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{what} contains NaN or infinite values")
    return array


def gaussians(mean: Any, logvar: Any, dim: int, what: str = "items", deterministic: bool = False
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Validate a batch of Gaussians; returns (unit mean f32 [N,D], logvar f32 [N,D], uncertainty f64 [N]).

    Means are renormalised to exactly unit length (the CSD inner-product identity assumes it)
    after checking they already are within ``UNIT_NORM_TOLERANCE`` (float16 rounding passes, an
    unnormalised vector does not). A ``deterministic`` collection takes points: ``logvar`` must
    be None, and comes back None with uncertainty 0; any other collection requires it.
    """
    mean = _float_matrix(mean, f"{what} mean", dim)
    if deterministic:
        if logvar is not None:
            raise InvalidInputError(f"{what}: this collection holds a deterministic model's points; pass logvar=None "
                                    "(log-variances come from a probabilistic model, whose embeddings do not belong "
                                    "here)")
    elif logvar is None:
        raise InvalidInputError(f"{what}: logvar is required; this collection holds Gaussian embeddings "
                                "(points from a deterministic model belong in a deterministic collection)")
    else:
        logvar = _float_matrix(logvar, f"{what} logvar", dim)
        if mean.shape[0] != logvar.shape[0]:
            raise InvalidInputError(f"{what}: {mean.shape[0]} means but {logvar.shape[0]} logvars")
    norms = np.linalg.norm(mean.astype(np.float64), axis=1)  # [N]
    bad = np.flatnonzero(np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE)
    if bad.size:
        raise InvalidInputError(f"{what} mean row {int(bad[0])} has norm {norms[bad[0]]:.4f}; means must be "
                                "L2-normalised (ProLIP outputs unit means)")
    unit = (mean.astype(np.float64) / norms[:, None]).astype(np.float32)
    if logvar is None:
        return unit, None, np.zeros(len(unit))
    logvar = np.ascontiguousarray(logvar, dtype=np.float32)  # stored precision; S is computed from it
    with np.errstate(over="ignore"):
        variance_sum = uncertainty(logvar.astype(np.float64))  # [N]
    if not np.isfinite(variance_sum).all() or variance_sum.max(initial=0.0) > 1e30:
        raise InvalidInputError(f"{what} logvar is too large: the sum of variances overflows")
    return unit, logvar, variance_sum


def upserts(ids: Any, mean: Any, logvar: Any, metadata: Any, dim: int, deterministic: bool
            ) -> tuple[list[str], np.ndarray, np.ndarray | None, np.ndarray, list[str]]:
    """Check one ``add`` call (every backend's): (ids, unit means, logvars, S, canonical metadata JSON)."""
    ids = item_ids(ids)
    mean, logvar, variance_sum = gaussians(mean, logvar, dim, deterministic=deterministic)
    if len(mean) != len(ids):
        raise InvalidInputError(f"{len(ids)} ids but {len(mean)} vectors")
    return ids, mean, logvar, variance_sum, metadata_list(metadata, len(ids))


def query_count(n: int) -> None:
    if n < 1:
        raise InvalidInputError("a search needs at least one query")
    if n > MAX_QUERIES:
        raise InvalidInputError(f"at most {MAX_QUERIES} queries per call, not {n}")


def metadata_list(metadata: Any, n: int) -> list[str]:
    """Serialise per-item metadata to canonical JSON strings; ``None`` means ``{}`` for every item."""
    if metadata is None:
        return ["{}"] * n
    if isinstance(metadata, dict) or not isinstance(metadata, Sequence):
        raise InvalidInputError("metadata must be a list with one dict per id (or None)")
    if len(metadata) != n:
        raise InvalidInputError(f"{n} ids but {len(metadata)} metadata entries")
    encoded = []
    for i, entry in enumerate(metadata):
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise InvalidInputError(f"metadata[{i}] must be a dict, not {type(entry).__name__}")
        try:
            text = json.dumps(entry, ensure_ascii=False, sort_keys=True, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"metadata[{i}] is not JSON-serialisable: {error}") from None
        if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
            raise InvalidInputError(f"metadata[{i}] is over the {MAX_METADATA_BYTES}-byte limit")
        encoded.append(text)
    return encoded


def finite_values(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{what} contains NaN or infinite values")
    return array
