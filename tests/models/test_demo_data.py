"""The demo world: seeded, hierarchical, many-to-many truth, corruptions of known strength."""

import json

import numpy as np
import pytest

from models import demo_data


@pytest.fixture(scope="module")
def scenes():
    return demo_data.generate("val", 200)


def test_same_split_and_index_give_the_same_scene_and_pixels():
    a, b = demo_data.generate("train", 3, start=10), demo_data.generate("train", 3, start=10)
    assert [s.captions for s in a] == [s.captions for s in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b, strict=True))


def test_splits_draw_different_scenes():
    train, test = demo_data.generate("train", 50), demo_data.generate("test", 50)
    assert [s.objects for s in train] != [s.objects for s in test]
    assert not any(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(train, test, strict=True))


def test_every_scene_matches_its_own_captions_and_levels_are_nested(scenes):
    for scene in scenes:
        assert len(scene.captions) == demo_data.LEVELS
        assert scene.captions[0] == "an object"
        assert all(scene.matches(c) for c in scene.captions)
    # a more specific caption matches a subset of the scenes its general version matches
    for scene in scenes[:40]:
        matched = [{other.id for other in scenes if other.matches(c)} for c in scene.captions]
        assert matched[3] <= matched[2] <= matched[1] <= matched[0]
        assert len(matched[0]) == len(scenes)


def test_truth_is_many_to_many(scenes):
    counts = [sum(other.matches(scene.captions[1]) for other in scenes) for scene in scenes]
    assert min(counts) > 1  # every shape caption describes several scenes


def test_matches_reads_the_grammar():
    scene = demo_data.Scene("test", 0, (
        demo_data.SceneObject("circle", "red", "large", 0, 0.5),
        demo_data.SceneObject("square", "blue", "small", 2, 0.5),
    ), ("an object", "a circle", "a red circle", "a large red circle left of a small blue square"), (50, 50, 50))
    assert scene.matches("a blue square right of a circle")
    assert scene.matches("a red object on the left")
    assert not scene.matches("a red circle right of a square")
    assert not scene.matches("a small red circle")
    assert not scene.matches("a square in the middle")
    assert not scene.matches("a circle left of a circle")  # the two objects must differ
    with pytest.raises(ValueError, match="expected a shape"):
        scene.matches("a red banana")
    with pytest.raises(ValueError, match="left of"):
        scene.matches("a circle beside a square")


def test_corruptions_change_more_with_strength(scenes):
    scene = scenes[0]
    clean = np.asarray(scene.image, dtype=np.float32)
    for kind in demo_data.CORRUPTIONS:
        assert np.array_equal(np.asarray(scene.corrupted(kind, 0.0)), clean.astype(np.uint8))
        change = [np.abs(np.asarray(scene.corrupted(kind, s), dtype=np.float32) - clean).mean() for s in (0.3, 1.0)]
        assert 0 < change[0] < change[1], kind
    with pytest.raises(ValueError, match="outside"):
        scene.corrupted("blur", 1.5)
    with pytest.raises(ValueError, match="unknown corruption"):
        scene.corrupted("rain", 0.5)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="unknown split"):
        demo_data.generate("dev", 1)


def test_writer_produces_pngs_and_a_manifest_row_per_caption(tmp_path):
    manifest = demo_data.write_split(tmp_path, "train", 6, corrupt_fraction=0.5)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 6 * demo_data.LEVELS
    assert sorted({r["level"] for r in rows}) == [0, 1, 2, 3]
    assert all((tmp_path / r["image"]).is_file() for r in rows)
    scenes = {s.id: s for s in demo_data.generate("train", 6)}
    assert all(scenes[r["scene"]].matches(r["caption"]) for r in rows)
    assert not list(tmp_path.glob("*.tmp"))
