"""A chunk gives the encoder's own vectors for its good items and a reason for each bad one."""

import numpy as np
import pytest

from indexer.fetch import FetchPolicy
from indexer.pipeline import ChunkEncoder, ChunkItem, EncodedChunk
from indexer.roots import Confinement
from tests.indexer.jobs.conftest import image_bytes, write_images, write_shard


@pytest.fixture
def chunk_encoder(encoder):
    policy = FetchPolicy(retries=0, timeout_s=2, allow_private_networks=True)  # the file server is on loopback
    with ChunkEncoder(encoder, fetch_policy=policy, decode_workers=2) as ce:
        yield ce


def test_image_chunk_from_files_shards_and_urls(chunk_encoder, encoder, tmp_path, file_server):
    (a, b) = write_images(tmp_path, ["a.png", "b.png"], seed=10)
    shard_image = image_bytes(11, size=(40, 20), fmt="JPEG")
    write_shard(tmp_path / "s.tar", {"k": {"jpg": shard_image}})
    import tarfile

    with tarfile.open(tmp_path / "s.tar") as tar:
        member = tar.getmember("k.jpg")
    file_server.routes["web.png"] = image_bytes(12, size=(9, 31))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    items = [ChunkItem("a", {"path": str(a)}),
             ChunkItem("dead-link", {"url": file_server.url("gone.png")}),
             ChunkItem("shard", {"tar": str(tmp_path / "s.tar"), "offset": member.offset_data, "size": member.size}),
             ChunkItem("broken", {"path": str(tmp_path / "broken.png")}),
             ChunkItem("web", {"url": file_server.url("web.png")}),
             ChunkItem("missing", {"path": str(tmp_path / "missing.png")}),
             ChunkItem("b", {"path": str(b)})]
    out = chunk_encoder("image", items)
    assert out.ids == ["a", "shard", "web", "b"]
    reasons = dict(out.failures)
    assert set(reasons) == {"dead-link", "broken", "missing"}
    assert reasons["dead-link"] == "HTTP 404"
    assert "cannot decode" in reasons["broken"] or "not a recognised image" in reasons["broken"]
    assert "no such file" in reasons["missing"]
    expected = encoder.encode_images([a.read_bytes(), shard_image, file_server.routes["web.png"], b.read_bytes()])
    np.testing.assert_allclose(out.mean, expected.mean, atol=1e-5)
    np.testing.assert_allclose(out.logvar, expected.logvar, atol=1e-5)


def test_items_outside_the_roots_fail_at_read_time(encoder, tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    (good,) = write_images(inside, ["ok.png"])
    (secret,) = write_images(outside, ["secret.png"])
    with ChunkEncoder(encoder, confinement=Confinement([inside])) as ce:
        out = ce("image", [ChunkItem("ok", {"path": str(good)}), ChunkItem("secret", {"path": str(secret)})])
    assert out.ids == ["ok"]
    assert "outside the allowed roots" in dict(out.failures)["secret"]


def test_oversized_files_are_refused_before_reading(encoder, tmp_path):
    (big,) = write_images(tmp_path, ["big.png"])
    with ChunkEncoder(encoder, max_item_bytes=10) as ce:
        out = ce("image", [ChunkItem("big", {"path": str(big)})])
    assert out.ids == [] and out.mean.shape == (0, 64)
    assert "exceeds the cap of 10 bytes" in out.failures[0][1]


def test_text_chunk_equals_the_encoder(chunk_encoder, encoder):
    items = [ChunkItem("1", {"text": "a red circle"}), ChunkItem("2", {"text": "   "}),
             ChunkItem("3", {"text": "the dog"})]
    out = chunk_encoder("text", items)
    assert out.ids == ["1", "3"] and out.failures == [("2", "no caption text")]
    expected = encoder.encode_texts(["a red circle", "the dog"])
    np.testing.assert_allclose(out.mean, expected.mean, atol=1e-6)


def test_images_are_encoded_in_encoder_sized_batches(encoder, tmp_path):
    calls = []

    class Counting:
        """The real encoder, recording the batch sizes it is asked for."""

        def __getattr__(self, name):
            return getattr(encoder, name)

        def encode_pixels(self, pixels):
            calls.append(len(pixels))
            return encoder.encode_pixels(pixels)

    paths = write_images(tmp_path, [f"{i}.png" for i in range(37)])
    with ChunkEncoder(Counting()) as ce:
        out = ce("image", [ChunkItem(str(i), {"path": str(p)}) for i, p in enumerate(paths)])
    assert calls == [16, 16, 5] and len(out.ids) == 37


def test_encoder_errors_propagate_instead_of_failing_items(encoder):
    class Broken:
        embed_dim = 64
        preprocessor = encoder.preprocessor

        def encode_texts(self, texts):
            raise ConnectionError("GPU fell off the bus")

    with ChunkEncoder(Broken()) as ce:
        prepared = ce.prepare("text", [ChunkItem("1", {"text": "a dog"})])
        with pytest.raises(ConnectionError):
            ce.encode(prepared)


def test_encoded_chunk_checks_shapes():
    with pytest.raises(ValueError):
        EncodedChunk(["a"], np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32), [])


def test_special_files_are_refused(encoder, tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.png")  # reading it would block forever
    with ChunkEncoder(encoder) as ce:
        out = ce("image", [ChunkItem("pipe", {"path": str(tmp_path / "pipe.png")}),
                           ChunkItem("dev", {"path": "/dev/zero"})])
    assert dict(out.failures) == {"pipe": f"{tmp_path / 'pipe.png'}: not a regular file",
                                  "dev": "/dev/zero: not a regular file"}


def test_reads_are_judged_by_the_file_opened_inside_the_roots(tmp_path):
    """A file swapped for a symlink out of the roots after planning is refused when read, not read."""
    import os

    from indexer.pipeline import ItemError, read_local
    from indexer.roots import Confinement

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    (root / "a.png").write_bytes(b"inside")
    os.symlink(root / "a.png", root / "alias.png")  # a link that stays inside is fine
    os.mkfifo(root / "pipe.png")
    confinement = Confinement([root])
    assert read_local({"path": str(root / "a.png")}, confinement, 100) == b"inside"
    assert read_local({"path": str(root / "alias.png")}, confinement, 100) == b"inside"

    os.remove(root / "a.png")
    os.symlink(outside / "secret.png", root / "a.png")  # swapped after the job was planned
    with pytest.raises(ItemError) as refused:
        read_local({"path": str(root / "a.png")}, confinement, 100)
    assert "outside the allowed roots" in str(refused.value) and "secret" not in str(refused.value)
    with pytest.raises(ItemError, match="not a regular file"):  # and it does not block on the FIFO
        read_local({"path": str(root / "pipe.png")}, confinement, 100)
    with pytest.raises(ItemError, match="no such file"):
        read_local({"path": str(root / "gone.png")}, confinement, 100)
    assert "outside the allowed roots" in str(pytest.raises(ItemError, read_local, {"path": str(root / "alias.png")},
                                                            confinement, 100).value)  # now leads out too
    (root / "b.png").write_bytes(b"inside")
    with pytest.raises(ItemError, match="exceeds the cap"):
        read_local({"path": str(root / "b.png")}, confinement, 3)


def test_a_job_on_the_cpu_leaves_the_decode_threads_their_cores(encoder, tmp_path):
    """torch runs with fewer intra-op threads while a job decodes beside it, and gets them back."""
    import torch

    from indexer.jobs import JobManager, JobSettings

    paths = write_images(tmp_path / "imgs", [f"{i}.png" for i in range(6)])
    seen = []
    encode_pixels = encoder.encode_pixels

    def recording(pixels):
        seen.append(torch.get_num_threads())
        return encode_pixels(pixels)

    before = torch.get_num_threads()
    torch.set_num_threads(4)  # as on a 4-core machine, whatever this one has
    try:
        encoder.encode_pixels = recording
        manager = JobManager(tmp_path / "data", encoder=encoder,
                             settings=JobSettings(chunk_size=3, decode_workers=1))
        try:
            assert manager.wait(manager.submit(paths[0].parent, "imgs")).done == 6
        finally:
            manager.close()
        assert seen == [3, 3] and torch.get_num_threads() == 4
        with encoder.sharing_cpu(1), encoder.sharing_cpu(2):  # holders overlap: the most held back wins
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 4
        manager = JobManager(tmp_path / "data2", encoder=encoder,
                             settings=JobSettings(chunk_size=3, decode_workers=1, overlap_decode=False))
        try:
            seen.clear()
            assert manager.wait(manager.submit(paths[0].parent, "imgs2")).done == 6
        finally:
            manager.close()
        assert seen == [4, 4]  # decoding in turn with encoding: nothing to share
    finally:
        del encoder.encode_pixels
        torch.set_num_threads(before)
