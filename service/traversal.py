"""Captions of a collection from the most specific match of an image to the most inclusive.

Two methods:

* ``walk`` (ProLIP's HierarCaps evaluation): start at the caption whose mean is closest
  to the image; take as root the caption that most includes the image (highest
  inclusion score of the image in it) blended with the empty caption ""; step from
  start to root in ``steps`` equal parts and collect the nearest caption at each step.
* ``inclusion``: shortlist the captions most likely true of the image (by calibrated
  probability when the model has a calibrator, else by CSD), keep those whose probability
  reaches ``min_probability`` (the calibrated one; without a calibrator the model's raw pair
  probability, which general captions rarely reach), and order them by uncertainty, least
  first (a general caption is an uncertain one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models import gaussian
from models.calibration import Calibrator
from models.encoder import GaussianBatch
from models.gaussian import PairLogit

from .schemas import TraversalStep
from .scoring import match_probability, unique_in_order, walk_queries

METHODS = ("walk", "inclusion")


def _steps(index: Any, image: GaussianBatch, ids: list[str], pair_logit: PairLogit,
           calibrator: Calibrator | None = None) -> list[TraversalStep]:
    items = [index.get(item_id) for item_id in ids]
    items = [item for item in items if item is not None]
    if not items:
        return []
    means = np.stack([np.asarray(item.mean, np.float64) for item in items])  # (n, D)
    logvars = np.stack([np.asarray(item.logvar, np.float64) for item in items])
    q_mean, q_logvar = image.mean[:1].astype(np.float64), image.logvar[:1].astype(np.float64)
    cosine = (q_mean @ means.T)[0]
    uncertainty = gaussian.uncertainty(logvars)
    pair_probability = match_probability(cosine, float(image.uncertainty[0]), uncertainty, pair_logit)
    image_unc = float(image.uncertainty[0])
    probability = None if calibrator is None else calibrator.probability(cosine, uncertainty, image_unc)
    margin = gaussian.inclusion_margin(q_mean, q_logvar, means, logvars)[0]
    return [TraversalStep(id=item.id, text=(item.metadata or {}).get("text"), uncertainty=float(uncertainty[i]),
                          probability=None if probability is None else float(probability[i]),
                          pair_probability=float(pair_probability[i]), inclusion=float(margin[i]),
                          metadata=dict(item.metadata or {})) for i, item in enumerate(items)]


def walk(index: Any, image: GaussianBatch, empty_caption: GaussianBatch, steps: int, pair_logit: PairLogit,
         calibrator: Calibrator | None = None) -> list[TraversalStep]:
    q_mean, q_logvar = image.mean[:1], image.logvar[:1]
    start_hit = index.search(q_mean, q_logvar, 1, rank="cosine")[0]
    root_hit = index.search(q_mean, q_logvar, 1, rank="inclusion", inclusion_direction="query_in_item")[0]
    if not start_hit or not root_hit:
        return []
    start = np.asarray(index.get(start_hit[0].id).mean, np.float64)
    root = np.asarray(index.get(root_hit[0].id).mean, np.float64) + empty_caption.mean[0].astype(np.float64)
    root /= max(float(np.linalg.norm(root)), 1e-12)
    points = walk_queries(start, root, steps)  # (steps, D)
    hits = index.search(points, np.zeros_like(points), 1, rank="cosine")
    ids = unique_in_order([row[0].id for row in hits if row])
    return _steps(index, image, ids, pair_logit, calibrator)


def by_inclusion(index: Any, image: GaussianBatch, shortlist: int, min_probability: float, pair_logit: PairLogit,
                 calibrator: Calibrator | None = None) -> list[TraversalStep]:
    if calibrator is not None:
        hits = index.search(image.mean[:1], image.logvar[:1], shortlist, rank="probability", calibrator=calibrator,
                            query_modality="image")[0]
    else:
        hits = index.search(image.mean[:1], image.logvar[:1], shortlist, rank="csd")[0]
    steps = _steps(index, image, [hit.id for hit in hits], pair_logit, calibrator)
    kept = [step for step in steps
            if (step.probability if step.probability is not None else step.pair_probability) >= min_probability]
    return sorted(kept, key=lambda step: step.uncertainty)
