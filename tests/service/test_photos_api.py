"""HEIC uploads and EXIF metadata through a real server."""

from __future__ import annotations

import httpx

from tests.indexer.jobs.test_photos import EXPECTED, exif_block, photo


def test_a_heic_upload_is_indexed_with_its_exif_and_served_back(server):
    heic = photo("heic", exif_block(), seed=7)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        added = http.post("/v1/collections/phone/images", files=[("files", ("IMG_0001.HEIC", heic, "image/heic"))],
                          data={"ids": ["IMG_0001"], "metadata": ['{"album": "Paris"}']})
        assert added.status_code == 200, added.text
        item = http.get("/v1/collections/phone/items/IMG_0001").json()
        assert item["metadata"] == {**EXPECTED, "album": "Paris", "filename": "IMG_0001.HEIC", "width": 64,
                                    "height": 48, "media_type": "image/heif"}
        image = http.get(item["image_url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/heif" and image.content == heic
        found = http.post("/v1/search/image", files={"file": ("q.heic", heic, "image/heic")},
                          data={"collection": "phone", "k": "1"}).json()
        assert found["results"][0]["id"] == "IMG_0001"
