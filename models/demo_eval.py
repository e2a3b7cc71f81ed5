"""The demo world's benchmark: what an uncertainty-aware retrieval model should get right.

On held-out scenes (``models.demo_data``) with many-to-many truth, it measures:

* retrieval, text->image per caption level and image->text, ranked by cosine of means and
  by CSD side by side: R@1/5/10 (a hit is any item the caption truly describes),
  multi-positive mAP@R and R-Precision;
* uncertainty: Spearman of text uncertainty against caption level (0 general .. 3
  specific; should be strongly negative), and of image uncertainty against corruption
  strength (should be positive), per corruption and pooled;
* inclusion: is an image ranked as included more in its general caption than in its
  specific one; does a masked input include its original (images: patches dropped,
  texts: tokens dropped); is a specific caption included in its general version;
* a specific-to-general traversal like ProLIP's HierarCaps table: walk from the image's
  mean towards the root caption ("an object") and retrieve the nearest caption on the way;
  retrieved captions should stay true and grow more general;
* the calibrated match probability and what the uncertainties buy (``demo_eval_probability``):
  calibration per caption level, ranking by probability, R@1 per query-uncertainty quintile,
  risk-coverage, and a gallery mixing clean and corrupted images;
* risk-coverage: image->text retrieval (top-1 level-3 caption) from query images of which half
  are degraded; answering the most confident queries first, how fast does the error rate
  fall? Confidence is the query image's uncertainty (lowest first) where the model has one,
  and, for every model, the top-1 cosine (the signal a deterministic model has).

Any model family runs it. A deterministic model (CLIP) has no uncertainty: its uncertainty
and inclusion sections are None, CSD equals 2 - 2 cosine, risk-coverage reports the top-1
cosine only, and the calibrated-probability section (which ranks queries by their
uncertainty) is not run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from . import demo_data
from .calibration import CalibrationError, Calibrator
from .demo_eval_probability import calibrator_for, evaluate_probability, probability_targets, render_probability
from .encoder import Encoder, GaussianBatch
from .evaluation import auroc, retrieval_metrics, risk_coverage, spearman
from .gaussian import csd_unit, inclusion, inclusion_margin

log = logging.getLogger(__name__)

STRENGTHS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
STRONG = 0.6  # corruption strength from which an image counts as degraded in the detection AUROCs
TRAVERSAL_STEPS = 11
MASK_DROP = 0.75  # share of patches / tokens dropped in the masked-input inclusion check
TARGETS = {  # name: (threshold, direction) for the demo model (see the training issue)
    "t2i_R@1_level3": (0.60, ">="),
    "spearman_level_text_uncertainty": (-0.80, "<="),
    "spearman_strength_image_uncertainty": (0.70, ">="),
    "inclusion_level0_over_level3": (0.90, ">="),
}


def evaluate_demo(source: str | os.PathLike | None = None, split: str = "test", num_images: int = 1000,
                  corruption_images: int = 200, device: str = "auto", progress: bool = False,
                  encoder: Encoder | None = None, seed: int = 0, calibration: str | os.PathLike | None = None,
                  calibration_images: int = 1000, family: str | None = None) -> dict:
    """Run the whole benchmark; returns a JSON-ready report (fractions in [0, 1]).

    ``calibration``: the calibrator file (default: the one next to the model; without one, eval
    fits one on ``calibration_images`` scenes of the validation split and says so in the report).
    ``family`` overrides the model family detected from the checkpoint's config.
    """
    if num_images < 10 or corruption_images < 2:
        raise ValueError("use at least 10 gallery images and 2 corruption images")
    started = time.perf_counter()
    encoder = encoder or Encoder.load(source, device=device, batch_size=256, calibration=calibration, family=family)
    points = encoder.deterministic  # no variances: the uncertainty sections do not apply
    scenes = demo_data.generate(split, num_images, image_size=encoder.image_size)
    images = _encode_images(encoder, [scene.image for scene in scenes], progress, "gallery images")
    report: dict = {"model": encoder.model_id, "model_family": encoder.family, "deterministic": points,
                    "split": split, "images": num_images}
    calibrator = calibration_source = None
    if points:
        report["calibrator"] = {"error": f"not evaluated: {NO_UNCERTAINTY}, and this section ranks queries by it"}
    else:
        try:
            calibrator, calibration_source = calibrator_for(encoder, calibration_images)
        except CalibrationError as error:  # a model whose pairs cannot be calibrated still gets the other figures
            log.warning("no calibrated probability: %s", error)
            report["calibrator"] = {"error": str(error)}
    report["text_to_image"], captions, texts = _text_to_image(encoder, scenes, images, calibrator)
    report["image_to_text"] = _image_to_text(scenes, images, captions, texts, calibrator)
    if calibrator is not None:
        report.update(evaluate_probability(
            encoder, calibrator, calibration_source, scenes, images, texts, seed=seed,
            encode_images=lambda pictures, what: _encode_images(encoder, pictures, progress, what)))
    report["text_uncertainty"] = None if points else _text_uncertainty(encoder, scenes)
    report["image_uncertainty"] = None if points else _image_uncertainty(encoder, scenes[:corruption_images],
                                                                          progress)
    report["inclusion"] = None if points else _inclusion(encoder, scenes, images, seed)
    report["degraded_queries"] = _risk_coverage(encoder, scenes, texts, seed, progress)
    report["traversal"] = _traversal(encoder, scenes[:200], images, captions, texts)
    report["targets"] = _targets(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


# --------------------------------------------------------------------------- encoding
def _encode_images(encoder: Encoder, images: Sequence, progress: bool, what: str) -> GaussianBatch:
    if not progress:
        return encoder.encode_images(images)
    from tqdm import tqdm

    with tqdm(total=len(images), desc=f"encoding {what}", unit="img", leave=False) as bar:
        return encoder.encode_images(images, progress=bar.update)


def _scores(query: GaussianBatch, items: GaussianBatch, calibrator: Calibrator | None = None,
            query_is_text: bool = True) -> dict[str, np.ndarray]:
    """The rankings as "higher is better" [Q, G]: cosine of means, negative CSD (2 - 2 cos for points) and,
    with a calibrator, the calibrated match logit (the order of the calibrated probability)."""
    cosine = query.mean @ items.mean.T
    scores = {"cosine": cosine, "csd": -csd_unit(query.mean, query.logvar, items.mean, items.logvar)}
    if calibrator is not None:
        q, x = query.uncertainty[:, None], items.uncertainty[None, :]
        scores["probability"] = calibrator.logit(cosine, *((q, x) if query_is_text else (x, q)))
    return scores


# --------------------------------------------------------------------------- retrieval
def _unique_captions(scenes: Sequence[demo_data.Scene]) -> list[tuple[str, int]]:
    seen: dict[str, int] = {}
    for scene in scenes:
        for level, caption in enumerate(scene.captions):
            seen.setdefault(caption, level)
    return list(seen.items())


def _truth(captions: Sequence[str], scenes: Sequence[demo_data.Scene]) -> np.ndarray:
    """[C, N] bool: caption c truly describes scene n."""
    queries = [demo_data.parse_caption(caption) for caption in captions]
    return np.array([[query.holds_in(scene.objects) for scene in scenes] for query in queries], dtype=bool)


def _text_to_image(encoder: Encoder, scenes, images: GaussianBatch, calibrator: Calibrator | None = None
                   ) -> tuple[dict, list[tuple[str, int]], dict]:
    captions = _unique_captions(scenes)
    strings = [caption for caption, _ in captions]
    texts = encoder.encode_texts(strings)
    truth = _truth(strings, scenes)
    levels = np.array([level for _, level in captions])
    results = {}
    for level in range(demo_data.LEVELS):
        rows = np.flatnonzero(levels == level)
        scores = _scores(_take(texts, rows), images, calibrator)
        results[f"level{level}"] = {name: retrieval_metrics(value, truth[rows]) for name, value in scores.items()}
        results[f"level{level}"]["mean_positives"] = float(truth[rows].sum(axis=1).mean())
    return results, captions, {"batch": texts, "truth": truth, "levels": levels}


def _take(batch: GaussianBatch, rows: np.ndarray) -> GaussianBatch:
    return GaussianBatch(batch.mean[rows], _rows(batch.logvar, rows))


def _image_to_text(scenes, images: GaussianBatch, captions, texts: dict, calibrator: Calibrator | None = None) -> dict:
    """Every image against the gallery of all test captions (all levels), and of level-3 ones only."""
    batch, truth, levels = texts["batch"], texts["truth"], texts["levels"]
    results = {}
    for name, columns in (("all_levels", np.arange(len(captions))), ("level3", np.flatnonzero(levels == 3))):
        scores = _scores(images, _take(batch, columns), calibrator, query_is_text=False)
        results[name] = {kind: retrieval_metrics(value, truth[columns].T) for kind, value in scores.items()}
        # what level does each ranking put first? (CSD should prefer specific captions)
        for kind, value in scores.items():
            results[name][kind]["mean_level_top1"] = float(levels[columns][value.argmax(axis=1)].mean())
    return results


def _rows(logvar: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if logvar is None else logvar[rows]


# --------------------------------------------------------------------------- uncertainty
def _text_uncertainty(encoder: Encoder, scenes) -> dict:
    """Spearman(level, uncertainty) over every scene's four captions (levels equally weighted)."""
    captions = [caption for scene in scenes for caption in scene.captions]
    levels = np.tile(np.arange(demo_data.LEVELS), len(scenes))
    unique, inverse = np.unique(np.array(captions), return_inverse=True)
    uncertainty = encoder.encode_texts(list(unique)).uncertainty[inverse]
    per_scene = uncertainty.reshape(len(scenes), demo_data.LEVELS)
    return {
        "spearman_level": spearman(levels, uncertainty),
        "mean_by_level": [float(per_scene[:, level].mean()) for level in range(demo_data.LEVELS)],
        "strictly_decreasing_share": float((np.diff(per_scene, axis=1) < 0).all(axis=1).mean()),
    }


def _image_uncertainty(encoder: Encoder, scenes, progress: bool) -> dict:
    """Spearman(strength, image uncertainty) for each corruption and pooled over all three."""
    results: dict = {}
    pooled_strength, pooled_uncertainty = [], []
    for kind in demo_data.CORRUPTIONS:
        pictures = [scene.corrupted(kind, strength) for scene in scenes for strength in STRENGTHS]
        uncertainty = _encode_images(encoder, pictures, progress, kind).uncertainty
        strengths = np.tile(STRENGTHS, len(scenes))
        per_strength = uncertainty.reshape(len(scenes), len(STRENGTHS))
        per_image = [spearman(STRENGTHS, row) for row in per_strength]
        results[kind] = {
            "spearman": spearman(strengths, uncertainty),
            "mean_per_image_spearman": float(np.nanmean(per_image)),
            "mean_by_strength": [float(v) for v in per_strength.mean(axis=0)],
        }
        pooled_strength.append(strengths)
        pooled_uncertainty.append(uncertainty)
    results["strengths"] = list(STRENGTHS)
    strengths, uncertainty = np.concatenate(pooled_strength), np.concatenate(pooled_uncertainty)
    results["spearman_pooled"] = spearman(strengths, uncertainty)
    # detection: does a higher uncertainty flag a degraded image (strength >= STRONG) against a clean one?
    extreme = (strengths == 0) | (strengths >= STRONG)
    results["auroc_degraded_vs_clean"] = auroc(uncertainty[extreme], strengths[extreme] >= STRONG)
    return results


# --------------------------------------------------------------------------- inclusion
def _paired_inclusion(a_mean, a_logvar, b_mean, b_logvar) -> np.ndarray:
    """Row-wise inclusion "a_i in b_i" [N] (the diagonal of the pairwise test, without forming it)."""
    out = np.empty(len(a_mean))
    for start in range(0, len(a_mean), 256):
        rows = slice(start, start + 256)
        block = inclusion(a_mean[rows], a_logvar[rows], b_mean[rows], b_logvar[rows])
        out[rows] = np.diag(block)
    return out


def _paired_margin(a_mean, a_logvar, b_mean, b_logvar) -> np.ndarray:
    out = np.empty(len(a_mean))
    for start in range(0, len(a_mean), 256):
        rows = slice(start, start + 256)
        out[rows] = np.diag(inclusion_margin(a_mean[rows], a_logvar[rows], b_mean[rows], b_logvar[rows]))
    return out


def _inclusion(encoder: Encoder, scenes, images: GaussianBatch, seed: int) -> dict:
    per_level = [encoder.encode_texts([scene.captions[level] for scene in scenes]) for level in range(demo_data.LEVELS)]
    scores = np.stack([_paired_inclusion(images.mean, images.logvar, t.mean, t.logvar) for t in per_level], axis=1)
    results = {
        # image in its level-0 caption scored above image in its level-3 caption
        "image_level0_over_level3": float((scores[:, 0] > scores[:, 3]).mean()),
        "image_general_over_specific_adjacent": [float((scores[:, lv] > scores[:, lv + 1]).mean())
                                                 for lv in range(demo_data.LEVELS - 1)],
        # a specific caption sits inside its general version (positive margin)
        "caption_level3_in_level0": float((_paired_margin(per_level[3].mean, per_level[3].logvar,
                                                          per_level[0].mean, per_level[0].logvar) > 0).mean()),
    }
    results.update(_masked_inclusion(encoder, scenes, images, seed))
    return results


@torch.inference_mode()
def _masked_inclusion(encoder: Encoder, scenes, images: GaussianBatch, seed: int) -> dict:
    """Share of inputs whose masked version includes them (original in masked, positive margin)."""
    model = encoder.model
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    patches = model.config.vision_cfg.grid_size ** 2
    keep = torch.randperm(patches, generator=generator)[:max(1, round(patches * (1 - MASK_DROP)))].sort().values
    pixels = encoder.preprocessor([scene.image for scene in scenes])
    masked_image_parts = [model.encode_image(pixels[s:s + 256].to(device, next(model.parameters()).dtype),
                                             keep_patches=keep.to(device)) for s in range(0, len(pixels), 256)]
    masked_image_mean = torch.cat([p.mean for p in masked_image_parts]).cpu().numpy()
    masked_image_logvar = torch.cat([p.logvar for p in masked_image_parts]).cpu().numpy()
    image_share = (_paired_margin(images.mean, images.logvar, masked_image_mean, masked_image_logvar) > 0).mean()

    captions = [scene.captions[3] for scene in scenes]
    ids = encoder.tokenizer(captions)  # (N, L)
    real = ids != encoder.tokenizer.pad_id
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    last_real = torch.where(real, positions, -1).max(dim=1, keepdim=True).values
    token_mask = (torch.rand(ids.shape, generator=generator) < MASK_DROP) & real & (positions != last_real)
    original = model.encode_text(ids.to(device))
    masked = model.encode_text(ids.to(device), token_mask=token_mask.to(device))
    text_share = (_paired_margin(original.mean.cpu().numpy(), original.logvar.cpu().numpy(),
                                 masked.mean.cpu().numpy(), masked.logvar.cpu().numpy()) > 0).mean()
    return {"image_in_masked_image": float(image_share), "text_in_masked_text": float(text_share),
            "mask_drop": MASK_DROP}


# --------------------------------------------------------------------------- risk-coverage
def _risk_coverage(encoder: Encoder, scenes, texts: dict, seed: int, progress: bool) -> dict:
    """Image->text retrieval among the level-3 captions, from query images half of which are degraded.

    Each scene is a query: clean, or (every other one) one of the corruptions at a strength
    drawn from STRENGTHS[1:]. An answer is the top-1 caption by CSD (cosine for points); it is
    wrong when the caption is not true of the scene. Each confidence signal orders the queries
    (see ``models.evaluation.risk_coverage``); ``auroc_degraded`` says how well the same signal
    flags queries degraded at strength >= STRONG against clean ones.
    """
    rng = np.random.default_rng(seed + 1)
    kinds = rng.choice(len(demo_data.CORRUPTIONS), len(scenes))
    strengths = np.where(np.arange(len(scenes)) % 2 == 1, rng.choice(STRENGTHS[1:], len(scenes)), 0.0)
    pictures = [scene.image if s == 0 else scene.corrupted(demo_data.CORRUPTIONS[k], float(s))
                for scene, k, s in zip(scenes, kinds, strengths, strict=True)]
    queries = _encode_images(encoder, pictures, progress, "risk-coverage queries")
    batch, truth, levels = texts["batch"], texts["truth"], texts["levels"]
    columns = np.flatnonzero(levels == 3)
    scores = _scores(queries, _take(batch, columns), query_is_text=False)
    top1 = scores["csd"].argmax(axis=1)  # [Q]
    errors = ~truth[columns][top1, np.arange(len(scenes))]
    signals = {"top1_cosine": scores["cosine"].max(axis=1)}
    if queries.logvar is not None:
        signals = {"image_uncertainty": -queries.uncertainty, **signals}
    degraded = strengths >= STRONG
    clean_or_degraded = (strengths == 0) | degraded
    by = {name: {**risk_coverage(errors, confidence),
                 "auroc_degraded": auroc(-confidence[clean_or_degraded], degraded[clean_or_degraded])}
          for name, confidence in signals.items()}
    return {"queries": len(scenes), "degraded_share": float((strengths > 0).mean()),
            "error_rate": float(errors.mean()), "error_rate_clean": float(errors[strengths == 0].mean()),
            "error_rate_degraded": float(errors[degraded].mean()) if degraded.any() else float("nan"), "by": by}


# --------------------------------------------------------------------------- traversal
def _traversal(encoder: Encoder, scenes, images: GaussianBatch, captions, texts: dict) -> dict:
    """Walk from each image's mean to the root caption's; retrieve the nearest caption at each step.

    Reported: precision (retrieved captions that describe the image), recall of the
    image's own four captions, and Spearman(step, level of the retrieved caption)
    (negative: the walk goes from specific to general).
    """
    batch, truth, levels = texts["batch"], texts["truth"], texts["levels"]
    strings = [caption for caption, _ in captions]
    root = strings.index(scenes[0].captions[0])
    alphas = np.linspace(0.0, 1.0, TRAVERSAL_STEPS)
    precisions, recalls, orders, examples = [], [], [], []
    for n, scene in enumerate(scenes):
        path = (1 - alphas)[:, None] * images.mean[n][None] + alphas[:, None] * batch.mean[root][None]
        path /= np.linalg.norm(path, axis=1, keepdims=True)
        nearest = (path @ batch.mean.T).argmax(axis=1)  # (steps,)
        distinct = list(dict.fromkeys(nearest.tolist()))
        precisions.append(truth[distinct, n].mean())
        own = {strings.index(caption) for caption in scene.captions}
        recalls.append(len(own & set(distinct)) / len(own))
        if len(set(levels[nearest])) > 1:
            orders.append(spearman(alphas, levels[nearest]))
        if len(examples) < 3:
            examples.append({"scene": scene.id, "true_captions": list(scene.captions),
                             "path": [{"caption": strings[c], "level": int(levels[c]), "true": bool(truth[c, n]),
                                       "uncertainty": None if batch.logvar is None else float(batch.uncertainty[c])}
                                      for c in distinct]})
    return {"images": len(scenes), "steps": TRAVERSAL_STEPS, "precision": float(np.mean(precisions)),
            "recall_own_captions": float(np.mean(recalls)),
            "spearman_step_level": float(np.mean(orders)) if orders else float("nan"), "examples": examples}


# --------------------------------------------------------------------------- targets and table
NO_UNCERTAINTY = "n/a: a deterministic model has no uncertainty"


def _targets(report: dict) -> dict:
    t2i = report["text_to_image"]
    points = report.get("deterministic", False)
    measured = {
        "t2i_R@1_level3": t2i["level3"]["csd"]["R@1"],
        "spearman_level_text_uncertainty": None if points else report["text_uncertainty"]["spearman_level"],
        "spearman_strength_image_uncertainty": None if points else report["image_uncertainty"]["spearman_pooled"],
        "inclusion_level0_over_level3": None if points else report["inclusion"]["image_level0_over_level3"],
    }
    targets = {}
    for name, (threshold, direction) in TARGETS.items():
        value = measured[name]
        if value is None:
            targets[name] = {"value": None, "target": f"{direction} {threshold}", "met": False, "note": NO_UNCERTAINTY}
            continue
        met = value >= threshold if direction == ">=" else value <= threshold
        targets[name] = {"value": value, "target": f"{direction} {threshold}", "met": bool(met)}
    if points:  # CSD of points ranks exactly as cosine: nothing to compare
        return targets
    for level in (1, 2):
        csd, cosine = t2i[f"level{level}"]["csd"]["mAP@R"], t2i[f"level{level}"]["cosine"]["mAP@R"]
        targets[f"mAP@R_csd_vs_cosine_level{level}"] = {"value": csd - cosine, "target": ">= 0 (CSD - cosine)",
                                                         "met": bool(csd >= cosine)}
    if "calibration" in report:
        for name, (value, target, met) in probability_targets(report).items():
            targets[name] = {"value": float(value), "target": target, "met": bool(met)}
    return targets


def render_report(report: dict) -> str:
    """A plain-text table of the report's figures (percentages)."""
    family = f"   family: {report['model_family']}" if report.get("model_family") else ""
    lines = [f"model: {report['model']}{family}   split: {report['split']}   gallery: {report['images']} images", ""]
    kinds = [kind for kind in ("cosine", "csd", "probability") if kind in report["text_to_image"]["level0"]]
    names = {"cosine": "cosine", "csd": "CSD", "probability": "probability"}
    lines.append("text -> image            |" + "|".join(f"{names[kind]:>12}: R@1   R@5  R@10 mAP@R  R-P "
                                                         for kind in kinds))
    rows = [(f"level {lv} captions", report["text_to_image"][f"level{lv}"]) for lv in range(demo_data.LEVELS)]
    rows += [("image -> all captions", report["image_to_text"]["all_levels"]),
             ("image -> level-3 capt.", report["image_to_text"]["level3"])]
    for label, block in rows:
        cells = []
        for kind in kinds:
            m = block[kind]
            cells.append(" ".join(f"{100 * m[key]:5.1f}" for key in ("R@1", "R@5", "R@10", "mAP@R", "R-Precision")))
        lines.append(f"{label:<24} | " + " | ".join(f"{cell:>30}" for cell in cells))
    if report.get("deterministic"):
        lines += ["", f"uncertainty, inclusion: {NO_UNCERTAINTY} (CSD of points = 2 - 2 cosine)"]
    else:
        lines += _uncertainty_lines(report)
    lines += _risk_coverage_lines(report.get("degraded_queries"))
    trav = report["traversal"]
    lines += ["", f"traversal image -> root ({trav['images']} images, {trav['steps']} steps): precision "
                  f"{100 * trav['precision']:.1f}%, recall of own captions {100 * trav['recall_own_captions']:.1f}%, "
                  f"Spearman(step, level) {trav['spearman_step_level']:+.3f}"]
    for example in trav["examples"][:2]:
        path = "  ->  ".join(f"{p['caption']} [L{p['level']}{'' if p['true'] else ', false'}]" for p in example["path"])
        lines.append(f"  {example['scene']}: {path}")
    if "calibration" in report:
        lines += render_probability(report)
    elif "calibrator" in report:
        lines += ["", f"no calibrated probability: {report['calibrator']['error']}"]
    lines += ["", "targets:"]
    for name, target in report["targets"].items():
        value = "   n/a " if target["value"] is None else f"{target['value']:+.4f}"
        lines.append(f"  {'MET ' if target['met'] else 'MISS'} {name:<40} {value} (target {target['target']})")
    lines.append(f"\n({report['seconds']} s)")
    return "\n".join(lines)


def _uncertainty_lines(report: dict) -> list[str]:
    tu, iu, inc = (report[k] for k in ("text_uncertainty", "image_uncertainty", "inclusion"))
    lines = ["", f"text uncertainty by level 0..3: {', '.join(f'{v:.4g}' for v in tu['mean_by_level'])}"
                 f"   Spearman(level, unc) = {tu['spearman_level']:+.3f}"]
    for kind in demo_data.CORRUPTIONS:
        means = ", ".join(f"{v:.4g}" for v in iu[kind]["mean_by_strength"])
        lines.append(f"image uncertainty, {kind:<12} strength {iu['strengths'][0]}..{iu['strengths'][-1]}: {means}"
                     f"   Spearman = {iu[kind]['spearman']:+.3f}")
    detection = iu.get("auroc_degraded_vs_clean", float("nan"))
    lines.append(f"Spearman(corruption strength, image unc), pooled = {iu['spearman_pooled']:+.3f}"
                 f"   AUROC degraded (strength >= {STRONG}) vs clean = {detection:.3f}")
    adjacent = ", ".join(f"{100 * v:.1f}%" for v in inc["image_general_over_specific_adjacent"])
    return lines + ["", f"inclusion: image in level-0 caption > in level-3 caption: "
                        f"{100 * inc['image_level0_over_level3']:.1f}%   adjacent levels: {adjacent}",
                    f"           level-3 caption in level-0 caption: {100 * inc['caption_level3_in_level0']:.1f}%"
                    f"   image in masked image: {100 * inc['image_in_masked_image']:.1f}%"
                    f"   text in masked text: {100 * inc['text_in_masked_text']:.1f}%"]


def _risk_coverage_lines(section: dict | None) -> list[str]:
    if not section:
        return []
    lines = ["", f"risk-coverage, image -> level-3 caption top-1 ({section['queries']} queries, "
                 f"{100 * section['degraded_share']:.0f}% degraded): error {100 * section['error_rate']:.1f}% "
                 f"(clean {100 * section['error_rate_clean']:.1f}%, degraded >= {STRONG}: "
                 f"{100 * section['error_rate_degraded']:.1f}%)"]
    for name, block in section["by"].items():
        lines.append(f"  by {name:<18} AURC {100 * block['aurc']:5.1f}%   error at 50% coverage "
                     f"{100 * block['risk@50%']:5.1f}%, at 80% {100 * block['risk@80%']:5.1f}%   "
                     f"AUROC degraded vs clean {block['auroc_degraded']:.3f}")
    return lines
