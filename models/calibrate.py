"""Fit a model's calibrator from labelled (image, caption) pairs: `prolip-retrieval calibrate`.

The pairs file is JSON Lines, one object per line, in one of two forms:

* labelled pairs: ``{"image": "a.png", "caption": "a red circle", "match": 1}`` (``match`` 0/1 or
  true/false on every row): exactly these pairs are used;
* a multi-positive manifest: ``{"image": "a.png", "caption": "a red circle"}`` (or ``"captions":
  [...]``) listing *every* true pair: each combination of its images and captions that it does
  not list is taken as a non-match. Above ``max_pairs`` combinations, every match is kept and
  non-matches are sampled uniformly, each weighted by the inverse of its sampling rate so that
  probabilities stay calibrated for the full set.

Image paths are relative to the file's folder (or absolute). An optional integer ``level`` tags a
row's caption (the demo world's caption level) and adds per-level figures to the report.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import Calibrator, PairData, evaluate, fit_calibrator, render_reliability

log = logging.getLogger(__name__)

DEFAULT_MAX_PAIRS = 2_000_000


@dataclass
class LabelledPairs:
    """What a pairs file says: images, captions, and either explicit labels or the complete list of matches."""

    source: Path
    images: list[Any] = field(default_factory=list)  # paths (from a file) or images in memory
    captions: list[str] = field(default_factory=list)
    levels: dict[int, int] = field(default_factory=dict)  # caption index -> level
    labelled: list[tuple[int, int, bool]] = field(default_factory=list)  # (image, caption, match)
    positives: set[tuple[int, int]] = field(default_factory=set)  # multi-positive: every true (image, caption)

    @property
    def multi_positive(self) -> bool:
        return not self.labelled


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{where}: 'match' must be 0, 1, true or false, not {value!r}")


def read_pairs(path: str | os.PathLike) -> LabelledPairs:
    """Parse and check a pairs file; errors name the line and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file {path} does not exist")
    pairs = LabelledPairs(path)
    image_index: dict[Path, int] = {}
    caption_index: dict[str, int] = {}
    labelled: dict[tuple[int, int], bool] = {}
    kinds: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            where = f"{path}:{number}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: each line must be a JSON object")
            image = row.get("image")
            if not isinstance(image, str) or not image.strip():
                raise ValueError(f"{where}: 'image' (a path) is missing")
            texts = row.get("captions", [row.get("caption")] if "caption" in row else None)
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError(f"{where}: give 'caption' (a non-empty text) or 'captions' (a list of them)")
            kind = "labelled" if "match" in row else "positive"
            kinds.add(kind)
            if len(kinds) > 1:
                raise ValueError(f"{where}: some rows carry 'match' and some do not; a file is either labelled "
                                 "pairs (every row has 'match') or a multi-positive manifest (none has)")
            if kind == "labelled" and len(texts) != 1:
                raise ValueError(f"{where}: a labelled row has one 'caption'")
            level = row.get("level")
            if level is not None and (not isinstance(level, int) or isinstance(level, bool)):
                raise ValueError(f"{where}: 'level' must be an integer")
            file = (path.parent / image).resolve() if not Path(image).is_absolute() else Path(image)
            if not file.is_file():
                raise ValueError(f"{where}: image {image!r} not found ({file})")
            i = image_index.setdefault(file, len(image_index))
            for text in texts:
                c = caption_index.setdefault(text, len(caption_index))
                if level is not None:
                    pairs.levels.setdefault(c, level)
                if kind == "labelled":
                    match = _flag(row["match"], where)
                    if labelled.get((i, c), match) != match:
                        raise ValueError(f"{where}: ({image!r}, {text!r}) was labelled both 0 and 1")
                    labelled[(i, c)] = match
                else:
                    pairs.positives.add((i, c))
    if not image_index:
        raise ValueError(f"{path} holds no pairs")
    pairs.images = list(image_index)
    pairs.captions = list(caption_index)
    pairs.labelled = [(i, c, match) for (i, c), match in labelled.items()]
    return pairs


def _choose_pairs(pairs: LabelledPairs, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                               np.ndarray]:
    """(image index, caption index, label, weight) per pair to fit on."""
    if not pairs.multi_positive:
        table = np.array([(i, c, m) for i, c, m in pairs.labelled], dtype=np.int64)
        return table[:, 0], table[:, 1], table[:, 2].astype(bool), np.ones(len(table))
    n_images, n_captions = len(pairs.images), len(pairs.captions)
    total = n_images * n_captions
    positive_flat = np.array(sorted(i * n_captions + c for i, c in pairs.positives), dtype=np.int64)
    if total <= max_pairs:
        flat = np.arange(total, dtype=np.int64)
        weight = np.ones(total)
    else:
        if len(positive_flat) >= max_pairs:
            raise ValueError(f"the manifest lists {len(positive_flat)} matches, more than --max-pairs {max_pairs}")
        rng = np.random.default_rng(seed)
        negatives_total = total - len(positive_flat)
        wanted = max_pairs - len(positive_flat)
        drawn = rng.choice(total, size=min(total, int(wanted * 1.05) + 64), replace=False)
        drawn = drawn[~np.isin(drawn, positive_flat)][:wanted]
        flat = np.concatenate([positive_flat, drawn])
        weight = np.concatenate([np.ones(len(positive_flat)), np.full(len(drawn), negatives_total / len(drawn))])
        log.info("sampled %d of %d non-matching pairs (each weighs %.1f)", len(drawn), negatives_total,
                 negatives_total / len(drawn))
    label = np.isin(flat, positive_flat)
    return flat // n_captions, flat % n_captions, label, weight


def pair_data(encoder: Any, pairs: LabelledPairs, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0,
              progress: bool = False) -> PairData:
    """Encode the file's images and captions once each and build the calibrator's view of its pairs."""
    image_rows, caption_rows, label, weight = _choose_pairs(pairs, max_pairs, seed)
    images = _encode(encoder.encode_images, list(pairs.images), progress, "images")
    texts = _encode(encoder.encode_texts, pairs.captions, progress, "captions")
    cosine = np.einsum("pd,pd->p", images.mean[image_rows].astype(np.float64),
                       texts.mean[caption_rows].astype(np.float64))
    levels = None
    if pairs.levels:
        levels = np.array([pairs.levels.get(int(c), -1) for c in caption_rows])
    image_unc, text_unc = _uncertainty(images), _uncertainty(texts)
    return PairData(cosine, None if text_unc is None else text_unc[caption_rows],
                    None if image_unc is None else image_unc[image_rows], label, weight, image_rows, levels)


def _uncertainty(batch: Any) -> np.ndarray | None:
    """S per input, or None for a model without variances (logvar None)."""
    return None if getattr(batch, "logvar", None) is None else batch.uncertainty


def _encode(function: Any, inputs: list, progress: bool, what: str) -> Any:
    if not progress:
        return function(inputs)
    from tqdm import tqdm

    with tqdm(total=len(inputs), desc=f"encoding {what}", unit=what[:-1], leave=False) as bar:
        return function(inputs, progress=bar.update)


def per_level(calibrator: Calibrator, data: PairData) -> dict[str, Any]:
    """ECE and precision/recall at 0.5, raw and calibrated, for each caption level tagged in the data."""
    if data.level is None:
        return {}
    out = {}
    for level in sorted(set(data.level.tolist()) - {-1}):
        part = data.subset(data.level == level)
        if len(part.cosine):
            report = evaluate(calibrator, part)
            out[str(level)] = {kind: {"ece": report[kind]["ece"], **report[kind]["at_threshold"]}
                               for kind in ("raw", "calibrated")}
    return out


def calibrate(encoder: Any, pairs: str | os.PathLike | LabelledPairs, *, max_pairs: int = DEFAULT_MAX_PAIRS,
              holdout: float = 0.2, seed: int = 0, progress: bool = False, note: str | None = None) -> Calibrator:
    """Read a pairs file (or take parsed pairs), encode them with ``encoder`` and fit its calibrator.

    ``note`` describes the data in words; it is stored with the calibrator's fit description.
    """
    pairs = pairs if isinstance(pairs, LabelledPairs) else read_pairs(pairs)
    data = pair_data(encoder, pairs, max_pairs, seed, progress)
    description = {"pairs_file": pairs.source.name, "images": len(pairs.images), "captions": len(pairs.captions),
                   "labels": "explicit 0/1 per pair" if not pairs.multi_positive else
                   "multi-positive manifest: every pair not listed is a non-match",
                   "matches": float(data.weight[data.label].sum()), "weighted_pairs": float(data.weight.sum()),
                   **({"note": note} if note else {})}
    calibrator = fit_calibrator(data, encoder.pair_logit, encoder.model_id, description, holdout, seed)
    if data.level is not None:
        calibrator.metrics["in_sample_by_level"] = per_level(calibrator, data)
    return calibrator


def render(calibrator: Calibrator) -> str:
    """The report `calibrate` prints: what was fitted, and the reliability tables, raw and calibrated."""
    fit, metrics = calibrator.fit, calibrator.metrics
    lines = [f"calibrator for {calibrator.model_id}: {fit.get('pairs')} pairs over {fit.get('images')} images "
             f"({fit.get('labels')}); features {', '.join(fit.get('features', []))}"]
    if fit.get("note"):
        lines.append(f"data: {fit['note']}")
    section = "held_out" if "held_out" in metrics else "in_sample"
    report = metrics[section]
    where = (f"held-out {report.get('images')} images (fitted on the rest)" if section == "held_out"
             else "the fit data itself")
    for kind, name in (("raw", "the model's own pair probability"), ("calibrated", "calibrated probability")):
        block = report[kind]
        at = {key: "n/a" if value is None else f"{value:.3f}" for key, value in block["at_threshold"].items()}
        lines += ["", render_reliability(block["reliability"], f"{name} on {where}: ECE {block['ece']:.4f}, "
                                         f"precision {at['precision']} / recall {at['recall']} at 0.5")]
    by_level = metrics.get("in_sample_by_level")
    if by_level:
        lines += ["", "by caption level (in sample): ECE raw -> calibrated, precision / recall at 0.5 calibrated"]
        for level, block in by_level.items():
            cal = {key: "n/a" if value is None else f"{value:.3f}" for key, value in block["calibrated"].items()
                   if key in ("precision", "recall")}
            lines.append(f"  level {level}: {block['raw']['ece']:.4f} -> {block['calibrated']['ece']:.4f}   "
                         f"{cal['precision']} / {cal['recall']}")
    return "\n".join(lines)
