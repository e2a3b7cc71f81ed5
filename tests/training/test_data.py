"""Training data: manifests and tar shards, bad rows counted, a seeded resumable order."""

import csv
import io
import json
import tarfile

import pytest
import torch

from models import demo_data
from models.preprocess import ImagePreprocessor
from models.tokenizer import Tokenizer
from models.training.data import PairIndex, PairStream


@pytest.fixture(scope="module")
def rows(tiny_data):
    return [json.loads(line) for line in (tiny_data / "train.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tokenizer(tiny_data):
    return Tokenizer(tiny_data / "tokenizer.json", 16, 0, "canonicalize")


def _stream(index, tokenizer, **kwargs):
    return PairStream(index, ImagePreprocessor(32), tokenizer, **{"seed": 5, **kwargs})


def test_csv_manifest_with_relative_paths(tiny_data, rows, tmp_path):
    manifest = tiny_data / "pairs.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepath", "title"])
        for row in rows[:10]:
            writer.writerow([row["image"], row["caption"]])
        writer.writerow([rows[0]["image"], ""])
    index = PairIndex([manifest])
    assert len(index) == 10 and index.skipped["empty caption"] == 1
    assert index.read_image(index.refs[0]).size == (demo_data.IMAGE_SIZE,) * 2
    bad = tmp_path / "bad.csv"
    bad.write_text("picture,words\na.png,hello\n")
    with pytest.raises(ValueError, match="caption column"):
        PairIndex([bad])


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_tar_shards_pair_members_by_key_and_drop_incomplete_samples(tiny_data, rows, tmp_path):
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for n, row in enumerate(rows[:6]):
            _add(tar, f"{n:04d}.png", (tiny_data / row["image"]).read_bytes())
            if n == 4:
                _add(tar, f"{n:04d}.json", json.dumps({"caption": row["caption"]}).encode())
            elif n != 5:
                _add(tar, f"{n:04d}.txt", row["caption"].encode())
        _add(tar, "orphan.txt", b"a caption without an image")
        _add(tar, "0099.png", b"not a png")
        _add(tar, "0099.txt", b"a red circle")
    index = PairIndex([tmp_path])  # a folder of shards
    assert len(index) == 6  # 0000-0004 and the undecodable 0099 (found when read)
    assert index.skipped == {"empty caption": 1, "no image in sample": 1}
    stream = _stream(index, tokenizer=Tokenizer(tiny_data / "tokenizer.json", 16, 0, "canonicalize"))
    batch = stream.next_batch(5)
    pixels, ids = batch.pixels, batch.input_ids
    assert pixels.shape == (5, 3, 32, 32) and ids.shape == (5, 16)
    assert stream.skipped["undecodable image"] == 1
    index.close()


def test_truncated_shard_keeps_what_precedes_the_damage(tiny_data, rows, tmp_path):
    shard = tmp_path / "cut.tar"
    with tarfile.open(shard, "w") as tar:
        for n, row in enumerate(rows[:4]):
            _add(tar, f"{n:04d}.png", (tiny_data / row["image"]).read_bytes())
            _add(tar, f"{n:04d}.txt", row["caption"].encode())
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    index = PairIndex([shard])
    assert 1 <= len(index) < 4


def test_order_is_seeded_and_resumes_from_its_state(tiny_data, tokenizer):
    index = PairIndex([tiny_data / "train.jsonl"])
    a, b = _stream(index, tokenizer), _stream(index, tokenizer)
    for _ in range(3):
        assert torch.equal(a.next_batch(40).input_ids, b.next_batch(40).input_ids)
    state = a.state_dict()
    assert state["epoch"] == 1  # 120 pairs drawn from 96: the order wrapped into a new epoch
    expected = a.next_batch(40).input_ids
    c = _stream(index, tokenizer)
    c.load_state_dict(state)
    assert torch.equal(c.next_batch(40).input_ids, expected)
    assert not torch.equal(_stream(index, tokenizer, seed=6).next_batch(40).input_ids, b.next_batch(40).input_ids)


def test_processes_get_disjoint_shares(tiny_data, tokenizer):
    index = PairIndex([tiny_data / "train.jsonl"])
    shares = [set(_stream(index, tokenizer, rank=r, world_size=2)._epoch_order().tolist()) for r in (0, 1)]
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == len(index)


def test_sources_that_cannot_work_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        PairIndex([tmp_path / "missing.jsonl"])
    (tmp_path / "empty.jsonl").write_text('{"image": "a.png", "caption": ""}\n')
    with pytest.raises(ValueError, match="no usable"):
        PairIndex([tmp_path / "empty.jsonl"])
    (tmp_path / "data.parquet").write_text("")
    with pytest.raises(ValueError, match="expected a .jsonl"):
        PairIndex([tmp_path / "data.parquet"])


def test_broader_captions_are_read_and_each_row_draws_one_of_its_own(tiny_data, rows, tokenizer, tmp_path):
    manifest = tiny_data / "broader.jsonl"
    lines = [json.dumps(row) for row in rows]
    lines.append(json.dumps({**rows[3], "broader": "an object"}))  # not a list: the row is dropped
    manifest.write_text("\n".join(lines) + "\n")
    index = PairIndex([manifest])
    assert len(index) == len(rows) and index.skipped == {"malformed broader captions": 1}
    by_caption = {row["caption"]: row["broader"] for row in rows}
    assert {ref.broader for ref in index.refs if ref.caption == "an object"} == {()}

    batch = _stream(index, tokenizer).next_batch(48)
    rows_with = batch.broader_rows.tolist()
    assert len(rows_with) == batch.broader_ids.shape[0] and len(rows_with) > 0
    # a row has a broader caption exactly when its caption is not already the most general
    general = tokenizer(["an object"])[0]
    for row in range(48):
        assert (row in rows_with) != torch.equal(batch.input_ids[row], general)
    # each drawn broader caption is one of that row's own, and different levels get drawn
    for position, row in enumerate(rows_with):
        own = [tokenizer([text])[0] for text in _captions_of(batch.input_ids[row], by_caption, tokenizer)]
        assert any(torch.equal(batch.broader_ids[position], ids) for ids in own)
    assert len({tuple(ids.tolist()) for ids in batch.broader_ids}) > 3


def _captions_of(ids, by_caption, tokenizer):
    for caption, broader in by_caption.items():
        if torch.equal(tokenizer([caption])[0], ids):
            return broader
    raise AssertionError("a batch caption that is in no row")


def test_shard_patterns_are_expanded_as_index_expands_them(tiny_data, rows, tmp_path):
    """Issue #16, defect 14: `train --data 'shards/train-{000..002}.tar'` said "does not exist"."""
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(3):
        with tarfile.open(shards / f"train-{s:03d}.tar", "w") as tar:
            for n, row in enumerate(rows[2 * s:2 * s + 2]):
                _add(tar, f"{s}{n:03d}.png", (tiny_data / row["image"]).read_bytes())
                _add(tar, f"{s}{n:03d}.txt", row["caption"].encode())
    assert len(PairIndex([str(shards / "train-{000..002}.tar")])) == 6
    assert len(PairIndex([str(shards / "train-{001..002}.tar")])) == 4
    assert len(PairIndex([str(shards / "*.tar")])) == 6
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PairIndex([str(shards / "train-{000..003}.tar")])  # the range names a shard that is not there
    with pytest.raises(FileNotFoundError, match="no file matches"):
        PairIndex([str(shards / "nothing-*.tar")])
