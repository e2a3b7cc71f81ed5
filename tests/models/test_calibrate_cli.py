"""`prolip-retrieval calibrate`: pairs files are checked line by line, and a demo-world fit round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from models.calibrate import _choose_pairs, read_pairs
from models.calibration import Calibrator
from service.cli import main


@pytest.fixture
def images(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    return tmp_path


def write(folder, rows) -> object:
    path = folder / "pairs.jsonl"
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_labelled_and_multi_positive_files_are_read(images):
    labelled = read_pairs(write(images, [{"image": "a.png", "caption": "x", "match": 1},
                                         {"image": "b.png", "caption": "x", "match": False}, "",
                                         {"image": "b.png", "caption": "y", "match": True, "level": 2}]))
    assert not labelled.multi_positive and len(labelled.images) == 2 and labelled.captions == ["x", "y"]
    assert sorted(labelled.labelled) == [(0, 0, True), (1, 0, False), (1, 1, True)] and labelled.levels == {1: 2}
    positives = read_pairs(write(images, [{"image": "a.png", "captions": ["x", "y"]},
                                          {"image": "c.png", "caption": "y"}]))
    assert positives.multi_positive and positives.positives == {(0, 0), (0, 1), (1, 1)}
    image, caption, label, weight = _choose_pairs(positives, max_pairs=100, seed=0)
    assert len(label) == 4 and label.sum() == 3 and (weight == 1).all()  # every combination, unlisted = non-match


def test_above_max_pairs_non_matches_are_sampled_and_weighted(images):
    rows = [{"image": name, "caption": f"caption {i}"} for i in range(30) for name in ("a.png",)]
    rows += [{"image": "b.png", "caption": "caption 0"}, {"image": "c.png", "caption": "caption 1"}]
    pairs = read_pairs(write(images, rows))
    total = len(pairs.images) * len(pairs.captions)  # 90 combinations, 32 of them matches
    image, caption, label, weight = _choose_pairs(pairs, max_pairs=50, seed=1)
    assert len(label) == 50 and label.sum() == 32 and (weight[label] == 1).all()
    assert weight.sum() == pytest.approx(total)  # sampled non-matches stand for all of them
    assert len(set(zip(image.tolist(), caption.tolist(), strict=True))) == 50


@pytest.mark.parametrize(("rows", "message"), [
    (["{not json"], "not JSON"),
    ([[1, 2]], "JSON object"),
    ([{"caption": "x"}], "'image'"),
    ([{"image": "a.png", "caption": " "}], "non-empty text"),
    ([{"image": "zzz.png", "caption": "x"}], "not found"),
    ([{"image": "a.png", "caption": "x", "match": 1}, {"image": "b.png", "caption": "x"}], "some rows carry 'match'"),
    ([{"image": "a.png", "caption": "x", "match": 2}], "0, 1, true or false"),
    ([{"image": "a.png", "caption": "x", "match": 1}, {"image": "a.png", "caption": "x", "match": 0}], "both 0 and 1"),
    ([{"image": "a.png", "caption": "x", "level": "2"}], "'level' must be an integer"),
    ([""], "holds no pairs"),
])
def test_bad_pairs_files_name_the_line_and_the_problem(images, rows, message):
    with pytest.raises(ValueError, match=message):
        read_pairs(write(images, rows))


def test_calibrate_fits_the_demo_model_from_a_demo_world_manifest(tmp_path, capsys):
    data = tmp_path / "demo"
    assert main(["demo-data", "--out", str(data), "--val", "40", "--val-corrupt-fraction", "0.2", "--matches"]) == 0
    manifest = data / "val-matches.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {"image", "caption", "level"} <= set(rows[0]) and sum(r["caption"] == "an object" for r in rows) == 40
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--pairs", str(manifest), "--out", str(out), "--device", "cpu",
                 "--note", "forty demo scenes"]) == 0
    printed = capsys.readouterr().out
    assert "held-out" in printed and "mean P" in printed and "level 0:" in printed
    from models.loading import model_id

    calibrator = Calibrator.load(out, model_id(None))
    assert calibrator.fit["note"] == "forty demo scenes" and calibrator.fit["images"] == 40
    held = calibrator.metrics["held_out"]
    assert held["calibrated"]["ece"] < held["raw"]["ece"]
    assert calibrator.metrics["in_sample_by_level"]["0"]["calibrated"]["recall"] > 0.9  # "an object" is true of all
    # the probability it gives is what its own formula says
    assert float(calibrator.probability(0.3, 0.2, 0.01)) == pytest.approx(
        1 / (1 + np.exp(-float(calibrator.logit(0.3, 0.2, 0.01)))))


def test_a_hub_model_needs_an_explicit_output(tmp_path, capsys):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text("")
    assert main(["calibrate", "--model", "hf-hub:someone/model", "--pairs", str(pairs)]) == 2
    assert "give --out" in capsys.readouterr().err
