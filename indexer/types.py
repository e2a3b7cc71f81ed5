"""What the indexer hands back: search hits, stored items, collection descriptions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import IndexSpec


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result.

    ``score`` is the value the rank mode orders by: CSD for ``csd`` (lower is closer), mean
    cosine for ``cosine`` (higher), the inclusion test for ``inclusion`` (higher = more
    included), the calibrated log-odds of a match for ``probability`` (higher). ``csd`` and
    ``cosine`` are always filled; ``uncertainty`` (the item's S = sum of variances) is None in a
    deterministic collection, whose CSD is ||mu_q - mu_x||^2; ``inclusion`` is the signed
    inclusion margin in the requested direction (positive: the relation holds) and only set by
    ``rank="inclusion"``.
    """

    id: str
    score: float
    csd: float
    cosine: float
    uncertainty: float | None
    metadata: dict[str, Any]
    inclusion: float | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """A stored item, read back from the metadata store."""

    id: str
    mean: np.ndarray  # [D] float32, unit norm
    logvar: np.ndarray | None  # [D] float32; None in a deterministic collection
    uncertainty: float | None  # S; None in a deterministic collection
    metadata: dict[str, Any]


@dataclass(frozen=True)
class CollectionInfo:
    """What ``Catalog.list`` reports per collection (cheap: no index is loaded for it)."""

    name: str
    modality: str  # "image" or "text"
    dim: int
    model_id: str
    spec: IndexSpec
    uuid: str
    created_at: str
    store: str  # "sqlite" or "redis"
    size: int | None = None  # live items; None when the store could not be read
    model_family: str | None = None  # prolip, pcmepp, clip; None for collections made before families
    deterministic: bool = False  # True: points from a deterministic model (no logvar, S = 0)
