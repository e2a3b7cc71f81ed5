"""Calibrated match probability: P(this text is true of this image), from the pair's two Gaussians.

A model's own pair logit (``models.gaussian.PairLogit``; PPCL for ProLIP) was trained to say
"this was *the* caption written for this image": every other caption of a batch was a negative,
even one that is true of the image. Its sigmoid is therefore near zero for general captions that
truly match ("a circle" for a picture of a circle) and cannot be read as a probability. A
``Calibrator`` is a logistic model fitted on held-out pairs with many-to-many truth (every
caption labelled true or false of every image) that maps a (text, image) pair to the probability
that the text is true of the image. Its features, per pair:

* ``pair_logit``: the model's own match logit;
* ``cosine``: the cosine of the two means;
* ``log_text_uncertainty``, ``log_image_uncertainty``: log S of each side (S = sum of variances);
* ``cosine_x_log_text_uncertainty``: their product for the text side, so how much a cosine counts
  depends on how general the text is ("an object" matches at cosines where "a large red circle
  on the left" does not).

Each side's S is clipped to the range seen in the fit data before use, so the model never
extrapolates in S. For a model without uncertainties (a deterministic CLIP: S = 0 or None) the
features fall back to ``cosine`` alone. Inference is a dot product and a sigmoid (NumPy); only
``fit_calibrator`` needs scikit-learn.

For one query the calibrated logit is ``slope(S_text) * cosine + g(S_item)``: with a text query the
slope is a constant, with an image query it depends on the caption's S. ``PairScorer.bound``
gives the largest logit any item with a cosine at most c can reach, which makes ranking a
collection by probability exact with only a cosine search (``indexer.probability_rank``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .gaussian import PairLogit

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"  # next to config.json and model.safetensors
FORMAT = "prolip-retrieval calibration v1"
MODALITIES = ("text", "image")
FEATURES = {
    "pair_logit": "the model's own match logit of the pair (models.gaussian.PairLogit)",
    "cosine": "cosine of the two means",
    "log_text_uncertainty": "log S of the text (S = sum of variances, clipped to the fit data's range)",
    "log_image_uncertainty": "log S of the image (clipped to the fit data's range)",
    "cosine_x_log_text_uncertainty": "cosine times log S of the text",
}
UNCERTAINTY_FEATURES = tuple(FEATURES)
COSINE_FEATURES = ("cosine",)  # models without uncertainties
ECE_BINS = 15  # equal-width probability bins for ECE and reliability tables
SLOPE_FLOOR = 1e-9


class CalibrationError(ValueError):
    """A calibration file or fit cannot be used; the message says why and what to do."""


def expected_calibration_error(probability: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None,
                               bins: int = ECE_BINS) -> float:
    """ECE: sum over equal-width bins of (share of pairs) * |observed match rate - mean probability|.

    0 is perfectly calibrated. ``weight`` counts each pair that many times (sampled negatives).
    """
    table = reliability(probability, label, weight, bins)
    total = sum(row["weight"] for row in table)
    if total <= 0:
        return float("nan")
    return float(sum(row["weight"] / total * abs(row["observed"] - row["mean_probability"]) for row in table))


def reliability(probability: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None,
                bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per non-empty bin: its edges, pairs, weight, mean predicted probability and observed match rate."""
    p = np.asarray(probability, np.float64).reshape(-1)
    y = np.asarray(label, np.float64).reshape(-1)
    w = np.ones_like(p) if weight is None else np.asarray(weight, np.float64).reshape(-1)
    if not (p.shape == y.shape == w.shape):
        raise ValueError(f"probability {p.shape}, label {y.shape} and weight {w.shape} must have one length")
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)  # bin i holds [i/bins, (i+1)/bins); 1.0 in the last
    rows = []
    for b in np.unique(index):
        chosen = index == b
        mass = float(w[chosen].sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "pairs": int(chosen.sum()), "weight": mass,
                     "mean_probability": float((w[chosen] * p[chosen]).sum() / mass),
                     "observed": float((w[chosen] * y[chosen]).sum() / mass)})
    return rows


def precision_recall(probability: np.ndarray, label: np.ndarray, threshold: float = 0.5,
                     weight: np.ndarray | None = None) -> dict[str, float | None]:
    """Precision and recall of "probability >= threshold" as the match decision (None when undefined:
    nothing kept, or nothing true; JSON has no NaN)."""
    p = np.asarray(probability, np.float64).reshape(-1)
    y = np.asarray(label, bool).reshape(-1)
    w = np.ones_like(p) if weight is None else np.asarray(weight, np.float64).reshape(-1)
    kept = p >= threshold
    true_kept = float(w[kept & y].sum())
    return {"precision": true_kept / float(w[kept].sum()) if kept.any() else None,
            "recall": true_kept / float(w[y].sum()) if y.any() else None,
            "kept": int(kept.sum())}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


@dataclass(frozen=True)
class _Canonical:
    """The calibrated logit expanded for unit means and clipped S (t: text side, i: image side):

    z = (c + ct * log St) * cos + st * St + si * Si + lt * log St + li * log Si + bias
    """

    c: float
    ct: float
    st: float
    si: float
    lt: float
    li: float
    bias: float


@dataclass(frozen=True)
class Calibrator:
    """P(text true of image) for one model's (text, image) pairs; see the module docstring.

    ``weights`` maps feature names (``FEATURES``) to coefficients; ``text_range`` / ``image_range``
    are the S ranges of the fit data (None for a model without uncertainties); ``fit`` describes
    the data it was fitted on and ``metrics`` its measured calibration (held-out and in-sample).
    """

    model_id: str
    pair_logit: PairLogit
    weights: dict[str, float]
    bias: float
    text_range: tuple[float, float] | None = None
    image_range: tuple[float, float] | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(FEATURES)
        if unknown:
            raise CalibrationError(f"unknown calibration features {sorted(unknown)}; known: {', '.join(FEATURES)}")
        needs_ranges = any(name != "cosine" for name in self.weights)
        if needs_ranges and (self.text_range is None or self.image_range is None):
            raise CalibrationError("features that read uncertainties need text_range and image_range")
        for name, span in (("text_range", self.text_range), ("image_range", self.image_range)):
            if span is not None and not (0 < span[0] <= span[1] and all(math.isfinite(v) for v in span)):
                raise CalibrationError(f"{name} must be 0 < low <= high, got {span}")
        if not all(math.isfinite(v) for v in (*self.weights.values(), self.bias)):
            raise CalibrationError("calibration weights and bias must be finite numbers")

    # ------------------------------------------------------------------ evaluation
    @property
    def uses_uncertainty(self) -> bool:
        return self.text_range is not None

    @property
    def canonical(self) -> _Canonical:
        w = self.weights.get
        pl = self.pair_logit
        return _Canonical(c=w("pair_logit", 0.0) * pl.cos_weight + w("cosine", 0.0),
                          ct=w("cosine_x_log_text_uncertainty", 0.0),
                          st=w("pair_logit", 0.0) * pl.variance_weight, si=w("pair_logit", 0.0) * pl.variance_weight,
                          lt=w("log_text_uncertainty", 0.0), li=w("log_image_uncertainty", 0.0),
                          bias=self.bias + w("pair_logit", 0.0) * pl.bias)

    @staticmethod
    def _clip(values: Any, span: tuple[float, float]) -> np.ndarray:
        if values is None:
            raise CalibrationError("this calibrator reads uncertainties, but the embeddings carry none")
        return np.clip(np.asarray(values, np.float64), span[0], span[1])

    def logit(self, cosine: Any, text_uncertainty: Any, image_uncertainty: Any) -> np.ndarray:
        """Calibrated log-odds, elementwise (broadcasting) over cosines and the two sides' S."""
        k = self.canonical
        cos = np.asarray(cosine, np.float64)
        if not self.uses_uncertainty:
            return k.c * cos + k.bias
        st, si = self._clip(text_uncertainty, self.text_range), self._clip(image_uncertainty, self.image_range)
        lt, li = np.log(st), np.log(si)
        return (k.c + k.ct * lt) * cos + k.st * st + k.si * si + k.lt * lt + k.li * li + k.bias

    def probability(self, cosine: Any, text_uncertainty: Any, image_uncertainty: Any) -> np.ndarray:
        """P(the text is true of the image), elementwise."""
        return _sigmoid(self.logit(cosine, text_uncertainty, image_uncertainty))

    def for_query(self, query_modality: str, item_modality: str, query_uncertainty: float | None) -> PairScorer:
        """The calibrated logit of one query against items of the other modality."""
        if query_modality not in MODALITIES or item_modality not in MODALITIES:
            raise CalibrationError(f"modalities must be text or image, got {query_modality!r} / {item_modality!r}")
        if query_modality == item_modality:
            raise CalibrationError(f"the calibrator is fitted on text-image pairs, not {query_modality} pairs")
        return PairScorer(self, query_modality, None if query_uncertainty is None else float(query_uncertainty))

    def min_slope(self) -> float:
        """The smallest d logit / d cosine over the fit data's text S range (> 0 for a usable calibrator)."""
        k = self.canonical
        if not self.uses_uncertainty:
            return k.c
        return min(k.c + k.ct * math.log(s) for s in self.text_range)

    # ------------------------------------------------------------------ files
    def to_dict(self, metrics: bool = True) -> dict[str, Any]:
        """The file's content; ``metrics=False`` leaves out the measured figures (what inference needs only)."""
        return {"format": FORMAT, "model_id": self.model_id, "pair_logit": self.pair_logit.to_dict(),
                "features": {name: FEATURES[name] for name in self.weights}, "weights": dict(self.weights),
                "bias": self.bias, "text_range": None if self.text_range is None else list(self.text_range),
                "image_range": None if self.image_range is None else list(self.image_range),
                "fit": self.fit, "metrics": self.metrics if metrics else {}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(f"not a calibration file of this project (its 'format' must be {FORMAT!r})")
        try:
            weights = {str(name): float(value) for name, value in data["weights"].items()}
            spans = [None if data.get(key) is None else (float(data[key][0]), float(data[key][1]))
                     for key in ("text_range", "image_range")]
            return cls(model_id=str(data["model_id"]), pair_logit=PairLogit.from_dict(data["pair_logit"]),
                       weights=weights, bias=float(data["bias"]), text_range=spans[0], image_range=spans[1],
                       fit=dict(data.get("fit") or {}), metrics=dict(data.get("metrics") or {}))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            if isinstance(error, CalibrationError):
                raise
            raise CalibrationError(f"malformed calibration file: {error!r}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(self.to_dict(), indent=1) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model_id: str | None = None) -> Calibrator:
        """Read a calibration file; with ``model_id``, refuse one fitted for other weights."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(f"calibration file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CalibrationError(f"cannot read calibration file {path}: {error}") from None
        try:
            calibrator = cls.from_dict(data)
        except CalibrationError as error:
            raise CalibrationError(f"{path}: {error}") from None
        if model_id is not None and not same_weights(calibrator.model_id, model_id):
            raise CalibrationError(
                f"{path} was fitted for model {calibrator.model_id!r}, not {model_id!r}: its probabilities would "
                f"not mean anything for these weights. Refit it (prolip-retrieval calibrate --model ... --pairs ...) "
                f"or remove it")
        return calibrator


def same_weights(a: str, b: str) -> bool:
    """Whether two model ids (``name@content hash``, ``models.loading.model_id``) name the same weights:
    the hashes decide, so a copied or renamed model folder keeps its calibrator."""
    if "@" in a and "@" in b:
        return a.rsplit("@", 1)[1] == b.rsplit("@", 1)[1]
    return a == b


def load_for_model(folder: str | os.PathLike | None, model_id: str, override: str | os.PathLike | None = None
                   ) -> Calibrator | None:
    """The calibrator of a model: ``override`` when given, else ``calibration.json`` in its folder, else None."""
    if override is not None:
        return Calibrator.load(override, model_id)
    if folder is None:
        return None
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    return Calibrator.load(path, model_id)


@dataclass(frozen=True)
class PairScorer:
    """A calibrator with one side fixed: the query's modality and uncertainty."""

    calibrator: Calibrator
    query_modality: str
    query_uncertainty: float | None

    def logit(self, cosine: Any, item_uncertainty: Any) -> np.ndarray:
        if self.query_modality == "text":
            return self.calibrator.logit(cosine, self.query_uncertainty, item_uncertainty)
        return self.calibrator.logit(cosine, item_uncertainty, self.query_uncertainty)

    def probability(self, cosine: Any, item_uncertainty: Any) -> np.ndarray:
        return _sigmoid(self.logit(cosine, item_uncertainty))

    def bound(self, cosine_upper: float, item_low: float | None, item_high: float | None) -> float:
        """The largest calibrated logit of any item with cosine <= ``cosine_upper`` and S in [low, high].

        The logit is slope(S) * cos + A * S + B * log S + C over the clipped S, with slope > 0 on
        the calibrator's text range (checked when fitted and here): so for a fixed S it is largest
        at the largest cosine, and over S it is largest at an end of the interval or where
        A + B / S = 0. Returns +inf when the slope is not positive (the logit does not grow with
        the cosine, so no cosine bound holds).
        """
        calibrator = self.calibrator
        if calibrator.min_slope() <= SLOPE_FLOOR:
            return math.inf
        if not calibrator.uses_uncertainty or item_low is None or item_high is None:
            return float(self.logit(cosine_upper, item_low if item_low is not None else 1.0))
        span = calibrator.image_range if self.query_modality == "text" else calibrator.text_range
        low, high = float(np.clip(item_low, *span)), float(np.clip(item_high, *span))
        k = calibrator.canonical
        a, b = (k.si, k.li) if self.query_modality == "text" else (k.st, k.ct * cosine_upper + k.lt)
        candidates = [low, high]
        if a != 0.0 and low < -b / a < high:
            candidates.append(-b / a)
        return float(max(self.logit(cosine_upper, s) for s in candidates))


# --------------------------------------------------------------------------- fitting
@dataclass
class PairData:
    """Labelled (text, image) pairs as the calibrator sees them, each array [P].

    ``weight`` counts a pair that many times (negatives sampled at a rate r weigh 1/r);
    ``group`` names the image of each pair, so held-out splits keep an image's pairs together;
    ``level`` optionally tags each pair (the demo world's caption level) for per-level metrics.
    """

    cosine: np.ndarray
    text_uncertainty: np.ndarray | None
    image_uncertainty: np.ndarray | None
    label: np.ndarray
    weight: np.ndarray
    group: np.ndarray
    level: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.cosine)
        for name in ("text_uncertainty", "image_uncertainty", "label", "weight", "group", "level"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} values for {n} pairs")

    def subset(self, chosen: np.ndarray) -> PairData:
        def take(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[chosen]

        return PairData(self.cosine[chosen], take(self.text_uncertainty), take(self.image_uncertainty),
                        self.label[chosen], self.weight[chosen], self.group[chosen], take(self.level))


def _has_uncertainty(data: PairData) -> bool:
    if data.text_uncertainty is None or data.image_uncertainty is None:
        return False
    return bool(np.all(data.text_uncertainty > 0) and np.all(data.image_uncertainty > 0))


def _features(data: PairData, names: Sequence[str], pair_logit: PairLogit, text_range, image_range) -> np.ndarray:
    cos = data.cosine.astype(np.float64)
    if tuple(names) == COSINE_FEATURES:
        return cos[:, None]
    st = np.clip(data.text_uncertainty.astype(np.float64), *text_range)
    si = np.clip(data.image_uncertainty.astype(np.float64), *image_range)
    columns = {"pair_logit": pair_logit.logit(cos, st, si), "cosine": cos, "log_text_uncertainty": np.log(st),
               "log_image_uncertainty": np.log(si), "cosine_x_log_text_uncertainty": cos * np.log(st)}
    return np.stack([columns[name] for name in names], axis=1)


def _fit_weights(data: PairData, names: Sequence[str], pair_logit: PairLogit, text_range, image_range
                 ) -> tuple[dict[str, float], float]:
    """Weighted logistic regression (scikit-learn) on standardised features, folded back to raw ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = _features(data, names, pair_logit, text_range, image_range)
    scaler = StandardScaler().fit(x, sample_weight=data.weight)
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(x), data.label.astype(int),
                                                  sample_weight=data.weight)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    coefficients = model.coef_[0] / scale
    bias = float(model.intercept_[0] - (model.coef_[0] * scaler.mean_ / scale).sum())
    return {name: float(value) for name, value in zip(names, coefficients, strict=True)}, bias


def evaluate(calibrator: Calibrator, data: PairData, threshold: float = 0.5) -> dict[str, Any]:
    """ECE, reliability and precision/recall at ``threshold``, raw (the model's pair probability) and calibrated."""
    raw = calibrator.pair_logit.probability(
        data.cosine, 0.0 if data.text_uncertainty is None else data.text_uncertainty,
        0.0 if data.image_uncertainty is None else data.image_uncertainty)
    calibrated = calibrator.probability(data.cosine, data.text_uncertainty, data.image_uncertainty)
    out: dict[str, Any] = {"pairs": int(len(data.cosine)), "positives": float(data.weight[data.label > 0].sum()),
                           "weighted_pairs": float(data.weight.sum())}
    for name, p in (("raw", raw), ("calibrated", calibrated)):
        out[name] = {"ece": expected_calibration_error(p, data.label, data.weight),
                     "at_threshold": precision_recall(p, data.label, threshold, data.weight),
                     "reliability": reliability(p, data.label, data.weight)}
    out["threshold"] = threshold
    return out


def fit_calibrator(data: PairData, pair_logit: PairLogit, model_id: str, description: dict[str, Any] | None = None,
                   holdout: float = 0.2, seed: int = 0) -> Calibrator:
    """Fit a calibrator on labelled pairs; measure it on a held-out share of the images first.

    The held-out metrics come from a fit on the other images (grouped by ``data.group``); the
    returned calibrator is then refitted on all pairs. Raises ``CalibrationError`` when the data
    cannot support a fit (one class only) or the fit would not grow with the cosine.
    """
    if len(data.cosine) == 0 or np.all(data.label > 0) or np.all(data.label <= 0):
        raise CalibrationError("the labelled pairs need both matches and non-matches to fit a calibrator")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    uses_uncertainty = _has_uncertainty(data)
    names = UNCERTAINTY_FEATURES if uses_uncertainty else COSINE_FEATURES
    text_range = image_range = None
    if uses_uncertainty:
        text_range = (float(data.text_uncertainty.min()), float(data.text_uncertainty.max()))
        image_range = (float(data.image_uncertainty.min()), float(data.image_uncertainty.max()))

    def build(part: PairData, metrics: dict[str, Any]) -> Calibrator:
        weights, bias = _fit_weights(part, names, pair_logit, text_range, image_range)
        return Calibrator(model_id, pair_logit, weights, bias, text_range, image_range, dict(description or {}),
                          metrics)

    metrics: dict[str, Any] = {}
    groups = np.unique(data.group)
    if holdout > 0 and len(groups) >= 5:
        rng = np.random.default_rng(seed)
        held = rng.permutation(groups)[:max(1, round(holdout * len(groups)))]
        test = np.isin(data.group, held)
        if data.label[~test].min() != data.label[~test].max() and test.any():
            partial = build(data.subset(~test), {})
            metrics["held_out"] = {"images": int(len(held)), **evaluate(partial, data.subset(test))}
    calibrator = build(data, {})
    if calibrator.min_slope() <= SLOPE_FLOOR:
        raise CalibrationError(
            f"the fitted probability does not grow with the cosine for every text uncertainty in the data (least "
            f"slope {calibrator.min_slope():.3g}); the labelled pairs are too few or too noisy for a calibrator")
    metrics["in_sample"] = evaluate(calibrator, data)
    description = {**(description or {}), "pairs": int(len(data.cosine)), "images": int(len(groups)),
                   "features": list(names), "holdout_share": holdout, "seed": seed}
    return Calibrator(model_id, pair_logit, calibrator.weights, calibrator.bias, text_range, image_range,
                      description, metrics)


def render_reliability(table: list[dict[str, float]], title: str = "") -> str:
    """A plain-text reliability table: one line per non-empty bin."""
    lines = [title] if title else []
    lines.append(f"{'bin':>11} {'pairs':>9} {'mean P':>8} {'observed':>9} {'gap':>7}")
    for row in table:
        gap = row["observed"] - row["mean_probability"]
        lines.append(f"{row['low']:5.2f}-{row['high']:4.2f} {row['pairs']:>9} {row['mean_probability']:8.4f} "
                     f"{row['observed']:9.4f} {gap:+7.4f}")
    return "\n".join(lines)
