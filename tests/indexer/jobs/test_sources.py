"""Sources are listed completely, in a stable order, with every unusable item and its reason."""

import json
import os

import pytest

from indexer import jobs_cli as indexer_cli
from indexer.pipeline import read_local
from indexer.roots import Confinement, PathNotAllowedError, confine
from indexer.sources import (
    FORMATS,
    MODALITIES,
    PlannedItem,
    RejectedItem,
    SourceError,
    default_modality,
    detect_format,
    expand_shards,
    scan,
)
from tests.indexer.jobs.conftest import image_bytes, write_images, write_shard

OPEN = Confinement(None)


def planned(results):
    return [r for r in results if isinstance(r, PlannedItem)]


def rejected(results):
    return [r for r in results if isinstance(r, RejectedItem)]


def test_cli_choices_match_the_library():
    assert indexer_cli.FORMATS == FORMATS and indexer_cli.MODALITIES == MODALITIES


def test_directory_is_recursive_sorted_and_skips_hidden_and_non_images(tmp_path):
    write_images(tmp_path, ["b.png", "a.jpg", "sub/c.PNG", "sub/deeper/d.webp", ".hidden.png", ".cache/x.png"])
    (tmp_path / "notes.txt").write_text("not an image")
    results = list(scan(str(tmp_path), "directory", "image", OPEN))
    assert [r.item_id for r in results] == ["a.jpg", "b.png", "sub/c.PNG", "sub/deeper/d.webp"]
    assert all(isinstance(r, PlannedItem) for r in results)
    c = tmp_path / "sub" / "c.PNG"
    assert results[2].ref == {"path": str(c), "stat": [c.stat().st_size, c.stat().st_mtime_ns]}
    assert results[2].metadata == {"path": "sub/c.PNG"}


def test_directory_symlink_escaping_the_roots_is_rejected(tmp_path):
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    write_images(corpus, ["ok.png"])
    write_images(outside, ["secret.png"])
    os.symlink(outside / "secret.png", corpus / "link.png")
    os.symlink(outside, corpus / "linked-folder")  # folders behind links are never walked
    results = list(scan(str(corpus), "directory", "image", Confinement([corpus])))
    assert [r.item_id for r in planned(results)] == ["ok.png"]
    (bad,) = rejected(results)
    assert bad.item_id == "link.png" and "outside the allowed roots" in bad.reason


def test_source_outside_roots_and_traversal_are_refused(tmp_path):
    root = tmp_path / "root"
    write_images(tmp_path / "other", ["x.png"])
    root.mkdir()
    with pytest.raises(PathNotAllowedError, match="outside the allowed roots"):
        list(scan(str(root / ".." / "other"), "directory", "image", Confinement([root])))
    os.symlink(tmp_path / "other", root / "escape")
    with pytest.raises(PathNotAllowedError, match="outside the allowed roots") as refused:
        confine(root / "escape" / "x.png", [root])
    assert "other" not in str(refused.value)  # where the symlink leads is not told
    assert confine(root, [root]) == root.resolve()
    with pytest.raises(FileNotFoundError):
        confine(root / "missing.png", [root])
    with pytest.raises(ValueError, match="not a folder"):
        Confinement([tmp_path / "nope"])


def test_csv_manifest_paths_urls_captions_metadata_and_bad_rows(tmp_path):
    write_images(tmp_path / "imgs", ["one.png", "two.png"])
    (tmp_path / "manifest.csv").write_text(
        "id,image,caption,metadata,license\n"
        "first,imgs/one.png,a red circle,\"{\"\"score\"\": 3}\",cc-by\n"
        "second,http://127.0.0.1:1/x.png,,,\n"
        "third,imgs/missing.png,,,\n"
        "fourth,imgs/two.png,,{not json},\n"
        "first,imgs/two.png,,,\n"
        ",imgs/two.png,the dog,,\n")
    results = list(scan(str(tmp_path / "manifest.csv"), "csv", "image", OPEN))
    good = {r.item_id: r for r in planned(results)}
    assert list(good) == ["first", "second", "imgs/two.png"]  # no id: the image names the item
    one = tmp_path / "imgs" / "one.png"
    assert good["first"].ref == {"path": str(one), "stat": [one.stat().st_size, one.stat().st_mtime_ns]}
    assert good["first"].metadata == {"score": 3, "license": "cc-by", "path": "imgs/one.png",
                                      "caption": "a red circle"}
    assert good["second"].ref == {"url": "http://127.0.0.1:1/x.png"}
    reasons = {(r.item_id, r.location): r.reason for r in rejected(results)}
    assert "no such file" in reasons[("third", "manifest.csv:4")]
    assert "not valid JSON" in reasons[("fourth", "manifest.csv:5")]
    assert "duplicate id" in reasons[("first", str(tmp_path / "imgs" / "two.png"))]


def test_jsonl_text_manifest_and_bad_lines(tmp_path):
    lines = [json.dumps({"id": "c1", "caption": "a red circle", "metadata": {"lang": "en"}}),
             "{broken",
             json.dumps(["not", "an", "object"]),
             json.dumps({"id": "c2", "text": "the dog", "source": "web"}),
             json.dumps({"id": "c3", "image": "x.png"}),
             ""]
    path = tmp_path / "captions.jsonl"
    path.write_text("\n".join(lines))
    assert default_modality(str(path), "jsonl") == "text"
    results = list(scan(str(path), "jsonl", "text", OPEN))
    assert [(r.item_id, r.ref) for r in planned(results)] == [("c1", {"text": "a red circle"}),
                                                               ("c2", {"text": "the dog"})]
    assert planned(results)[1].metadata == {"source": "web", "text": "the dog"}
    reasons = [r.reason for r in rejected(results)]
    assert "invalid JSON" in reasons[0] and "expected a JSON object" in reasons[1] and "no caption" in reasons[2]


def test_manifest_paths_are_confined(tmp_path):
    root = tmp_path / "root"
    write_images(tmp_path, ["outside.png"])
    root.mkdir()
    (root / "m.jsonl").write_text(json.dumps({"id": "x", "image": "../outside.png"}) + "\n")
    (bad,) = list(scan(str(root / "m.jsonl"), "jsonl", "image", Confinement([root])))
    assert isinstance(bad, RejectedItem) and "outside the allowed roots" in bad.reason


def test_webdataset_shards_group_members_and_read_back_by_offset(tmp_path):
    first = {"s000": {"jpg": image_bytes(1, fmt="JPEG"), "txt": b"a red circle", "json": b'{"w": 12}'},
             "s001": {"png": image_bytes(2), "txt": b"the dog"},
             "s002": {"txt": b"caption only"},
             "s003": {"png": image_bytes(3), "json": b"[1, 2]"}}
    write_shard(tmp_path / "train-000.tar", first)
    write_shard(tmp_path / "train-001.tar", {"s100": {"png": image_bytes(4)}})
    pattern = str(tmp_path / "train-{000..001}.tar")
    assert detect_format(pattern) == "webdataset"
    assert expand_shards(pattern) == [str(tmp_path / "train-000.tar"), str(tmp_path / "train-001.tar")]
    results = list(scan(pattern, "webdataset", "image", OPEN))
    good = {r.item_id: r for r in planned(results)}
    assert list(good) == ["s000", "s001", "s100"]
    assert good["s000"].metadata == {"shard": "train-000.tar", "w": 12, "caption": "a red circle"}
    assert read_local(good["s001"].ref, OPEN, 10**6) == first["s001"]["png"]
    assert {r.item_id: r.reason for r in rejected(results)} == {
        "s002": "sample has no image member", "s003": "unreadable sample (s003.json is not a JSON object)"}
    texts = planned(scan(pattern, "webdataset", "text", OPEN))
    assert [(r.item_id, r.ref["text"]) for r in texts] == [("s000", "a red circle"), ("s001", "the dog"),
                                                           ("s002", "caption only")]


def test_compressed_or_missing_shards_are_clear_errors(tmp_path):
    (tmp_path / "bad.tar").write_bytes(b"\x1f\x8b not a plain tar")
    with pytest.raises(SourceError, match="not a plain"):
        list(scan(str(tmp_path / "bad.tar"), "webdataset", "image", OPEN))
    with pytest.raises(SourceError, match="no shard matches"):
        expand_shards(str(tmp_path / "none-*.tar"))


def test_format_detection_and_text_from_a_folder(tmp_path):
    (tmp_path / "m.csv").write_text("id,caption\n1,a dog\n")
    assert detect_format(str(tmp_path)) == "directory"
    assert detect_format(str(tmp_path / "m.csv")) == "csv"
    assert default_modality(str(tmp_path / "m.csv"), "csv") == "text"
    with pytest.raises(SourceError, match="does not exist"):
        detect_format(str(tmp_path / "nope.bin"))
    with pytest.raises(SourceError, match="folder source holds images"):
        list(scan(str(tmp_path), "directory", "text", OPEN))


class _FakeHeif:
    """A stand-in decoder plugin registering '.heic' with Pillow, as pillow-heif's opener does."""

    MAGIC = b"FAKEHEIC"

    @classmethod
    def register(cls):
        from PIL import Image, ImageFile

        class Plugin(ImageFile.ImageFile):
            format, format_description = "FAKEHEIF", "test stand-in for HEIF"

            def _open(self):
                header = self.fp.read(16)
                width, height = int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big")
                self._mode, self._size = "RGB", (width, height)
                self.tile = [ImageFile._Tile("raw", (0, 0, width, height), 16, ("RGB", 0, 1))]

        Image.register_open("FAKEHEIF", Plugin, lambda prefix: prefix[:8] == cls.MAGIC)
        Image.register_extension("FAKEHEIF", ".cr2")

    @staticmethod
    def unregister():
        from PIL import Image

        for table in (Image.OPEN, Image.MIME):
            table.pop("FAKEHEIF", None)
        Image.ID[:] = [i for i in Image.ID if i != "FAKEHEIF"]
        Image.EXTENSION.pop(".cr2", None)

    @classmethod
    def file(cls, width=8, height=6) -> bytes:
        return cls.MAGIC + width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x80" * (width * height * 3)


def test_images_without_a_decoder_are_counted_as_failed_and_a_registered_decoder_picks_them_up(tmp_path):
    """Issue #16, defect 13: pictures in formats no installed decoder opens (HEIC before pillow-heif; camera
    raw files now) were skipped without a word; now they fail with the reason until a decoder plugin
    registers the format with Pillow, and are indexed from then on."""
    from models.preprocess import load_image

    write_images(tmp_path, ["a.png"])
    (tmp_path / "b.cr2").write_bytes(_FakeHeif.file())
    (tmp_path / "c.NEF").write_bytes(b"whatever")
    results = list(scan(str(tmp_path), "directory", "image", OPEN))
    assert [r.item_id for r in planned(results)] == ["a.png"]
    reasons = {r.item_id: r.reason for r in rejected(results)}
    assert set(reasons) == {"b.cr2", "c.NEF"}
    assert "unsupported image format .cr2: no decoder" in reasons["b.cr2"]
    _FakeHeif.register()
    try:
        results = list(scan(str(tmp_path), "directory", "image", OPEN))
        assert [r.item_id for r in planned(results)] == ["a.png", "b.cr2"]
        assert [r.item_id for r in rejected(results)] == ["c.NEF"]  # .nef is still not registered
        raw = next(r for r in planned(results) if r.item_id == "b.cr2")
        assert load_image(read_local(raw.ref, OPEN, 10**6)).size == (8, 6)  # the job's decoder uses it too
    finally:
        _FakeHeif.unregister()
