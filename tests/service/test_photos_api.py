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
        # what the EXIF says is filterable: capture date (ISO 8601 text), camera, place
        plain = http.post("/v1/collections/phone/images", files=[("files", ("plain.png", photo("jpeg", b"", seed=8),
                                                                            "image/jpeg"))], data={"ids": ["plain"]})
        assert plain.status_code == 200, plain.text
        for where, expected in (
                ({"field": "taken_at", "range": {"gte": "2024-05-01", "lt": "2024-05-02"}}, ["IMG_0001"]),
                ({"and": [{"field": "camera_make", "eq": "Apple"}, {"field": "gps_latitude", "range": {"gt": 48}}]},
                 ["IMG_0001"]),
                ({"field": "camera_make", "ne": "Apple"}, ["plain"])):
            body = http.post("/v1/search/text", json={"query": "a photo", "collection": "phone", "k": 5,
                                                      "filter": where}).json()
            assert [hit["id"] for hit in body["results"]] == expected, (where, body)
