"""What calibration and uncertainty buy on the demo world: the probability half of `prolip-retrieval eval`.

On the held-out split (``models.demo_eval`` encodes it) it measures:

* calibration of the match probability, raw (the model's own pair probability, sigmoid of its
  PPCL logit) against calibrated (``models.calibration``), per caption level and for the top 10
  results of each text query: ECE, reliability tables, precision and recall at 0.5;
* R@1 per quintile of query uncertainty, for text queries (level-3 captions) and image queries
  (against level-3 captions), clean and on a gallery that mixes clean and corrupted images;
* risk-coverage: abstain on the most uncertain queries first, against random abstention, whose
  expected risk is the full set's at every coverage;
* ranking by cosine, CSD and calibrated probability on that mixed gallery.

Rankings break ties in the gallery's order. Without a calibrator file next to the model it fits
one on the validation split the way the shipped one was (1,000 scenes, 15 % corrupted) and says so.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import demo_data
from .calibrate import LabelledPairs, calibrate
from .calibration import Calibrator, expected_calibration_error, precision_recall, reliability
from .encoder import Encoder, GaussianBatch
from .evaluation import retrieval_metrics
from .gaussian import csd_unit

log = logging.getLogger(__name__)

THRESHOLD = 0.5
TOP = 10
QUINTILES = 5
COVERAGES = tuple(round(0.1 * i, 1) for i in range(1, 11))
MIXED_FRACTION = 0.5  # share of the mixed gallery's scenes shown corrupted
MIXED_STRENGTH = (0.3, 1.0)
CALIBRATION_SPLIT = "val"
CALIBRATION_IMAGES = 1000
CALIBRATION_CORRUPT_FRACTION = 0.15  # the shipped calibrator's data (demo-data --val-corrupt-fraction 0.15)


# --------------------------------------------------------------------------- calibrator
def demo_pairs(split: str, n: int, corrupt_fraction: float, image_size: int = demo_data.IMAGE_SIZE
               ) -> LabelledPairs:
    """The demo world's many-to-many truth over ``n`` scenes, as `demo-data --matches` writes it, in memory."""
    views = [demo_data.scene_view(split, i, corrupt_fraction, image_size) for i in range(n)]
    pairs = LabelledPairs(Path(f"demo world {split} split"))
    pairs.images = [image for _, _, _, image in views]
    captions: dict[str, int] = {}
    for position, caption, level in demo_data.true_pairs([scene for scene, _, _, _ in views]):
        index = captions.setdefault(caption, len(captions))
        pairs.levels[index] = level
        pairs.positives.add((position, index))
    pairs.captions = list(captions)
    return pairs


def calibrator_for(encoder: Encoder, images: int = CALIBRATION_IMAGES) -> tuple[Calibrator, str]:
    """(the model's calibrator, where it came from): its file, else a fit on the validation split now."""
    if encoder.calibrator is not None:
        return encoder.calibrator, "the model's calibration file"
    log.info("the model has no calibrator: fitting one on %d %s scenes", images, CALIBRATION_SPLIT)
    pairs = demo_pairs(CALIBRATION_SPLIT, images, CALIBRATION_CORRUPT_FRACTION, encoder.image_size)
    note = (f"demo world {CALIBRATION_SPLIT} split, {images} scenes, {CALIBRATION_CORRUPT_FRACTION:.0%} corrupted; "
            "every caption of the split against every image")
    return calibrate(encoder, pairs, note=note), f"fitted by eval on the {CALIBRATION_SPLIT} split"


# --------------------------------------------------------------------------- scores
def pair_scores(calibrator: Calibrator, texts: GaussianBatch, images: GaussianBatch) -> dict[str, np.ndarray]:
    """[T, I] cosine, CSD, raw pair probability, calibrated logit and probability of every (text, image)."""
    cosine = texts.mean.astype(np.float64) @ images.mean.astype(np.float64).T
    text_unc, image_unc = texts.uncertainty[:, None], images.uncertainty[None, :]
    logit = calibrator.logit(cosine, text_unc, image_unc)
    return {"cosine": cosine, "csd": csd_unit(texts.mean.astype(np.float64), texts.logvar.astype(np.float64),
                                               images.mean.astype(np.float64), images.logvar.astype(np.float64)),
            "raw": calibrator.pair_logit.probability(cosine, text_unc, image_unc),
            "logit": logit, "probability": 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500)))}


def rankings(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """"Higher is better" [T, I] for each rank mode."""
    return {"cosine": scores["cosine"], "csd": -scores["csd"], "probability": scores["logit"]}


# --------------------------------------------------------------------------- calibration
def _calibration_of(raw: np.ndarray, calibrated: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    return {kind: {"ece": expected_calibration_error(p, truth), "reliability": reliability(p, truth),
                   "at_threshold": precision_recall(p, truth, THRESHOLD)}
            for kind, p in (("raw", raw), ("calibrated", calibrated))} | {"pairs": int(truth.size)}


def calibration(scores: dict[str, np.ndarray], truth: np.ndarray, levels: np.ndarray) -> dict[str, Any]:
    """ECE, reliability and precision/recall at 0.5 over all pairs, per caption level, and on each text's top 10."""
    out = {"all": _calibration_of(scores["raw"], scores["probability"], truth)}
    for level in range(demo_data.LEVELS):
        rows = levels == level
        out[f"level{level}"] = _calibration_of(scores["raw"][rows], scores["probability"][rows], truth[rows])
    top = np.argsort(-scores["logit"], axis=1, kind="stable")[:, :TOP]  # each text's top 10 by probability
    out[f"top{TOP}"] = _calibration_of(*(np.take_along_axis(a, top, axis=1)
                                         for a in (scores["raw"], scores["probability"], truth)))
    out["threshold"] = THRESHOLD
    return out


# --------------------------------------------------------------------------- uncertainty
def quintiles(uncertainty: np.ndarray, hit: np.ndarray) -> dict[str, Any]:
    """R@1 in each fifth of the queries by uncertainty, least uncertain first (equal counts, ties by position)."""
    groups = np.array_split(np.argsort(uncertainty, kind="stable"), QUINTILES)
    return {"R@1": [float(hit[g].mean()) for g in groups], "queries": [int(len(g)) for g in groups],
            "uncertainty_upper": [float(uncertainty[g].max()) for g in groups], "R@1_all": float(hit.mean())}


def risk_coverage(uncertainty: np.ndarray, hit: np.ndarray) -> dict[str, Any]:
    """Risk (1 - R@1) over the least uncertain share of queries, for each coverage; random abstention keeps
    a random share, whose expected risk is the full set's at every coverage."""
    order = np.argsort(uncertainty, kind="stable")
    risk = [float(1.0 - hit[order[:max(1, math.ceil(c * len(hit)))]].mean()) for c in COVERAGES]
    random_risk = float(1.0 - hit.mean())
    gap = [r - random_risk for c, r in zip(COVERAGES, risk, strict=True) if c <= 0.9]
    return {"coverage": list(COVERAGES), "risk": risk, "random_risk": random_risk,
            "worst_gap_to_random_up_to_0.9": float(max(gap)), "better_than_random_up_to_0.9": bool(max(gap) < 0)}


def _top1_hits(score: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per query row: is its best-scored item true? ([Q, G] score and truth)."""
    best = np.argmax(score, axis=1)
    return truth[np.arange(len(score)), best]


def query_uncertainty(clean: dict, mixed: dict, truth: np.ndarray, levels: np.ndarray, texts: GaussianBatch,
                      clean_images: GaussianBatch, mixed_images: GaussianBatch) -> tuple[dict, dict]:
    """R@1 by quintile and risk-coverage for text queries (level 3, clean gallery) and image queries
    (against level-3 captions, clean and mixed galleries), ranked by CSD."""
    rows = np.flatnonzero(levels == 3)
    cases = {"text_level3_clean": (-clean["csd"][rows], truth[rows], texts.uncertainty[rows]),
             "image_clean": (-clean["csd"][rows].T, truth[rows].T, clean_images.uncertainty),
             "image_mixed": (-mixed["csd"][rows].T, truth[rows].T, mixed_images.uncertainty)}
    by_quintile, curves = {}, {}
    for name, (score, positives, uncertainty) in cases.items():
        hit = _top1_hits(score, positives)
        by_quintile[name] = quintiles(uncertainty, hit)
        curves[name] = risk_coverage(uncertainty, hit)
    return by_quintile, curves


# --------------------------------------------------------------------------- mixed gallery
def mixed_gallery(scenes, seed: int = 0) -> tuple[list, np.ndarray, np.ndarray]:
    """(images, corrupted flags, strengths): each scene corrupted with probability MIXED_FRACTION."""
    images, corrupted, strengths = [], [], []
    for scene in scenes:
        rng = np.random.default_rng([seed, demo_data.SPLIT_SEEDS[scene.split], scene.index, 2])
        if rng.random() < MIXED_FRACTION:
            strength = float(rng.uniform(*MIXED_STRENGTH))
            images.append(scene.corrupted(str(rng.choice(demo_data.CORRUPTIONS)), strength))
            corrupted.append(True)
            strengths.append(strength)
        else:
            images.append(scene.image)
            corrupted.append(False)
            strengths.append(0.0)
    return images, np.array(corrupted), np.array(strengths)


def mixed_retrieval(scores: dict, truth: np.ndarray, levels: np.ndarray, corrupted: np.ndarray) -> dict[str, Any]:
    """Text->image per level on the mixed gallery for each rank mode, and the corrupted share of each top 10."""
    out: dict[str, Any] = {"images": int(len(corrupted)), "corrupted": int(corrupted.sum()),
                           "strength": list(MIXED_STRENGTH)}
    ranked = rankings(scores)
    for level in range(demo_data.LEVELS):
        rows = levels == level
        block = {}
        for mode, score in ranked.items():
            metrics = retrieval_metrics(score[rows], truth[rows])
            top = np.argsort(-score[rows], axis=1, kind="stable")[:, :TOP]
            metrics[f"corrupted_share_top{TOP}"] = float(corrupted[top].mean())
            block[mode] = metrics
        out[f"level{level}"] = block
    out["calibration"] = {name: {kind: block[kind]["ece"] for kind in ("raw", "calibrated")}
                          for name, block in calibration(scores, truth, levels).items() if name != "threshold"}
    return out


def evaluate_probability(encoder: Encoder, calibrator: Calibrator, source: str, scenes, images: GaussianBatch,
                         texts: dict, encode_images, seed: int = 0) -> dict[str, Any]:
    """The report's probability sections (see the module docstring)."""
    batch, truth, levels = texts["batch"], texts["truth"], texts["levels"]
    clean = pair_scores(calibrator, batch, images)
    pictures, corrupted, strengths = mixed_gallery(scenes, seed)
    mixed_images = encode_images(pictures, "mixed gallery")
    mixed = pair_scores(calibrator, batch, mixed_images)
    by_quintile, curves = query_uncertainty(clean, mixed, truth, levels, batch, images, mixed_images)
    return {
        "calibrator": {"source": source, "model_id": calibrator.model_id, "fit": calibrator.fit,
                       "features": list(calibrator.weights)},
        "calibration": calibration(clean, truth, levels),
        "mixed_gallery": mixed_retrieval(mixed, truth, levels, corrupted),
        "uncertainty_quintiles": by_quintile,
        "risk_coverage": curves,
    }


def probability_targets(report: dict) -> dict[str, tuple[float, str, bool]]:
    """(value, target, met) of the calibration issue's targets (demo model, test split)."""
    cal = report["calibration"]
    level_ece = max(cal[f"level{lv}"]["calibrated"]["ece"] for lv in range(demo_data.LEVELS))
    general = [cal[f"level{lv}"]["calibrated"]["at_threshold"] for lv in (0, 1)]
    # nothing kept (precision undefined) or nothing true counts as 0: the target is not met
    precision = min(g["precision"] or 0.0 for g in general)
    recall = min(g["recall"] or 0.0 for g in general)
    i2t = report["image_to_text"]["all_levels"]
    gain = i2t["probability"]["mAP@R"] - i2t["cosine"]["mAP@R"]
    gap = report["risk_coverage"]["image_mixed"]["worst_gap_to_random_up_to_0.9"]
    ece_all = cal["all"]["calibrated"]["ece"]
    return {
        "calibrated_ECE_all_pairs": (ece_all, "<= 0.02", ece_all <= 0.02),
        "calibrated_ECE_worst_level": (level_ece, "<= 0.05", level_ece <= 0.05),
        f"calibrated_ECE_top{TOP}": (cal[f"top{TOP}"]["calibrated"]["ece"], "<= 0.05",
                                     cal[f"top{TOP}"]["calibrated"]["ece"] <= 0.05),
        "precision_at_0.5_levels_0_1": (precision, ">= 0.9", precision >= 0.9),
        "recall_at_0.5_levels_0_1": (recall, ">= 0.9", recall >= 0.9),
        "i2t_all_levels_mAP@R_probability_minus_cosine": (gain, ">= 0", gain >= 0),
        "risk_coverage_image_worst_gap_to_random": (gap, "< 0 at every coverage <= 90 %", gap < 0),
    }


def _pr(block: dict) -> str:
    values = block["at_threshold"]
    return " / ".join("  n/a" if values[key] is None else f"{values[key]:.3f}" for key in ("precision", "recall"))


def render_probability(report: dict) -> list[str]:
    """The probability sections as text lines (appended to ``demo_eval.render_report``)."""
    cal = report["calibration"]
    source = report["calibrator"]["source"]
    lines = ["", f"match probability (calibrator: {source}); ECE raw -> calibrated, precision / recall at "
                 f"{cal['threshold']}:"]
    for name in ["all", *(f"level{lv}" for lv in range(demo_data.LEVELS)), f"top{TOP}"]:
        raw, calibrated = cal[name]["raw"], cal[name]["calibrated"]
        label = {"all": "all pairs", f"top{TOP}": f"top {TOP} of each text"}.get(name, name.replace("level", "level "))
        lines.append(f"  {label:<20} ECE {raw['ece']:.4f} -> {calibrated['ece']:.4f}   P/R raw {_pr(raw)}"
                     f"   calibrated {_pr(calibrated)}")
    mixed = report["mixed_gallery"]
    lines += ["", f"mixed gallery ({mixed['corrupted']} of {mixed['images']} images corrupted, strength "
                  f"{mixed['strength'][0]}-{mixed['strength'][1]}): mAP@R / R@1 / corrupted share of top {TOP}"]
    for level in range(demo_data.LEVELS):
        cells = [f"{mode} {100 * m['mAP@R']:5.1f} / {100 * m['R@1']:5.1f} / {100 * m[f'corrupted_share_top{TOP}']:4.1f}"
                 for mode, m in mixed[f"level{level}"].items()]
        lines.append(f"  level {level}: " + "   ".join(cells))
    lines += ["", "R@1 by query-uncertainty quintile, least uncertain first (ranked by CSD):"]
    for name, block in report["uncertainty_quintiles"].items():
        values = ", ".join(f"{100 * v:.1f}" for v in block["R@1"])
        lines.append(f"  {name:<18} {values}   (all {100 * block['R@1_all']:.1f})")
    lines += ["", "risk (1 - R@1) at coverage 10 %..100 %, abstaining on the most uncertain queries:"]
    for name, curve in report["risk_coverage"].items():
        values = ", ".join(f"{100 * v:.1f}" for v in curve["risk"])
        lines.append(f"  {name:<18} {values}   random abstention {100 * curve['random_risk']:.1f}")
    return lines
