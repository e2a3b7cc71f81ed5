"""GET /v1/collections/{name}/items/{id}/image for items a batch job indexed: read back from the
job's source file (so the web UI can show every image collection), never from outside the roots."""

from __future__ import annotations

import json

from .conftest import png_bytes
from .test_jobs_api import _wait_finished


def _index_folder(client, folder, collection: str) -> dict:
    submitted = client.post("/v1/jobs", json={"source": str(folder), "collection": collection})
    assert submitted.status_code == 202, submitted.text
    job = _wait_finished(client, submitted.json()["id"])
    assert job["state"] == "completed", job
    return job


def test_job_indexed_images_are_served_from_their_source(make_client, tmp_path):
    photos = tmp_path / "corpora" / "photos"
    (photos / "nested").mkdir(parents=True)
    (photos / "a.png").write_bytes(png_bytes(1))
    (photos / "nested" / "b.png").write_bytes(png_bytes(2))
    client = make_client(job_roots=str(tmp_path / "corpora"))
    _index_folder(client, photos, "photos")

    for item_id, seed in (("a.png", 1), ("nested/b.png", 2)):
        response = client.get(f"/v1/collections/photos/items/{item_id}/image")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.content == png_bytes(seed)
    item = client.get("/v1/collections/photos/items/a.png").json()
    assert item["image_url"] == "/v1/collections/photos/items/a.png/image"

    # the source file gone: a clear 404, and the item no longer claims an image
    (photos / "a.png").unlink()
    missing = client.get("/v1/collections/photos/items/a.png/image")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_item"
    assert client.get("/v1/collections/photos/items/a.png").json()["image_url"] is None


def test_item_paths_cannot_reach_outside_the_job_roots(make_client, tmp_path):
    root = tmp_path / "corpora"
    photos = root / "photos"
    photos.mkdir(parents=True)
    (photos / "a.png").write_bytes(png_bytes(1))
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(7))
    client = make_client(job_roots=str(root))
    _index_folder(client, photos, "photos")
    # an uploaded item in the same collection whose metadata points out of the roots, and whose
    # stored copy is lost: the fallback to the job source must refuse the path, not serve the file
    upload = client.post("/v1/collections/photos/items", files=[("files", ("x.png", png_bytes(3), "image/png"))],
                         data={"ids": ["sneaky"], "metadata": [json.dumps({"path": "../../secret.png"})]})
    assert upload.status_code == 200, upload.text
    client.app.state.service.media.path("photos", "sneaky").unlink()
    response = client.get("/v1/collections/photos/items/sneaky/image")
    assert response.status_code == 404
    assert response.content != secret.read_bytes()


def test_images_indexed_from_webdataset_shards_are_served_from_the_shard(make_client, tmp_path):
    from tests.indexer.jobs.conftest import image_bytes, write_shard

    root = tmp_path / "corpora"
    root.mkdir()
    jpeg = image_bytes(5, size=(40, 32), fmt="JPEG")
    shard = write_shard(root / "part-000.tar", {"cat": {"jpg": jpeg, "txt": b"a cat"},
                                                 "dog": {"png": png_bytes(6), "json": b'{"source": "x"}'}})
    client = make_client(job_roots=str(root))
    _index_folder(client, shard, "shards")

    for item_id, data, media_type in (("cat", jpeg, "image/jpeg"), ("dog", png_bytes(6), "image/png")):
        item = client.get(f"/v1/collections/shards/items/{item_id}").json()
        assert item["image_url"] == f"/v1/collections/shards/items/{item_id}/image"
        response = client.get(item["image_url"])
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == media_type
        assert response.content == data  # exactly the member's bytes, nothing of its neighbours

    # the shard cut short after indexing: a clear 404, not a torn image, and no image claimed
    shard.write_bytes(shard.read_bytes()[:1024])
    missing = client.get("/v1/collections/shards/items/dog/image")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_item"
    assert client.get("/v1/collections/shards/items/dog").json()["image_url"] is None
