"""Bad input never hurts the service: each gets a 4xx with a clear JSON error, and nothing is lost."""

from __future__ import annotations

import struct
import zlib

import pytest

from .conftest import CAPTIONS, add_captions, add_images, png_bytes


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def _error(response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error["message"]


def _search_image(client, data: bytes, name: str = "x.png"):
    return client.post("/v1/search/image", files={"file": (name, data, "image/png")},
                       data={"collection": "captions", "k": "3"})


def test_broken_images_are_refused_with_reasons(client):
    add_captions(client)
    # over the configured pixel limit (40M), and over Pillow's own bomb limit
    assert "exceeds the limit" in _error(_search_image(client, bomb_png(9000, 9000)), 422, "invalid_image")
    assert "decompression bomb" in _error(_search_image(client, bomb_png(30_000, 30_000)), 422, "invalid_image")
    assert _error(_search_image(client, png_bytes(1)[:120]), 422, "invalid_image")
    assert "not a recognised image" in _error(_search_image(client, b"just some text"), 422, "invalid_image")
    assert "empty" in _error(_search_image(client, b""), 422)
    # a bad image among good ones adds nothing
    files = [("files", ("ok.png", png_bytes(1), "image/png")), ("files", ("bad.png", b"GIF89a-broken", "image/gif"))]
    _error(client.post("/v1/collections/images/items", files=files), 422, "invalid_image")
    assert client.get("/v1/collections/images").status_code == 404


def test_oversized_uploads_bodies_and_texts(make_client):
    client = make_client(max_upload_bytes=2048, max_request_bytes=64 * 1024, max_text_chars=100)
    add_captions(client)
    big_png = png_bytes(1, size=(200, 200))
    assert len(big_png) > 2048
    _error(_search_image(client, big_png), 413, "payload_too_large")
    _error(client.post("/v1/search/text", content=b"x" * 100_000, headers={"content-type": "application/json"}),
           413, "payload_too_large")

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(100):
            yield b"y" * 1024

    _error(client.post("/v1/search/text", content=chunks(), headers={"content-type": "application/json"}), 413)
    _error(client.post("/v1/search/text", json={"query": "a" * 101, "collection": "captions"}), 413)
    _error(client.post("/v1/embed/text", json={"texts": ["ok"] * 300}), 422)


def test_unknown_collections_bad_k_and_malformed_requests(client):
    add_captions(client)
    _error(client.post("/v1/search/text", json={"query": "a dog", "collection": "nope"}), 404, "unknown_collection")
    _error(client.get("/v1/collections/nope"), 404, "unknown_collection")
    _error(client.get("/v1/collections/captions/items/missing"), 404, "unknown_item")
    _error(client.delete("/v1/collections/captions/items/missing"), 404, "unknown_item")
    for k in (0, -5, 10**9):
        _error(client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "k": k}), 422)
    _error(client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "k": "many"}), 422)
    _error(client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "rank": "best"}), 422)
    _error(client.post("/v1/search/text", content=b'{"query": "a', headers={"content-type": "application/json"}),
           422, "invalid_request")
    _error(client.post("/v1/search/text", json=["not", "an", "object"]), 422)
    _error(client.post("/v1/search/text", json={"query": "   ", "collection": "captions"}), 422)
    _error(client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "extra": 1}), 422)
    _error(client.post("/v1/collections/captions/items", content=b"text", headers={"content-type": "text/plain"}),
           415, "unsupported_media_type")
    _error(client.post("/v1/collections/bad%20name/items", json={"items": [{"text": "a"}]}), 422)
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    _error(client.put("/healthz"), 405)


def test_modality_conflicts_and_bad_items(client):
    add_captions(client)
    add_images(client)
    _error(client.post("/v1/collections/captions/items", files={"files": ("a.png", png_bytes(1), "image/png")}),
           409, "conflict")
    _error(client.post("/v1/collections/images/items", json={"items": [{"text": "a dog"}]}), 409)
    _error(client.post("/v1/collections/captions/items",
                       json={"items": [{"id": "same", "text": "a"}, {"id": "same", "text": "b"}]}), 422)
    _error(client.post("/v1/collections/captions/items", json={"items": [{"id": "a/b", "text": "a"}]}), 422)
    _error(client.post("/v1/collections/images/items", files={"files": ("a.png", png_bytes(1), "image/png")},
                       data={"metadata": "{not json"}), 422)
    _error(client.post("/v1/traverse/image", files={"file": ("a.png", png_bytes(1), "image/png")},
                       data={"collection": "images"}), 409)


def test_nothing_indexed_is_lost_after_bad_input(client):
    add_captions(client)
    test_unknown_collections_bad_k_and_malformed_requests(client)
    _search_image(client, bomb_png())
    body = client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "k": 100}).json()
    assert sorted(r["metadata"]["text"] for r in body["results"]) == sorted(CAPTIONS)
    assert client.get("/readyz").status_code == 200


def test_api_keys_guard_everything_but_health(make_client):
    client = make_client(api_keys="key-one-123456,key-two-123456")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    _error(client.get("/v1/collections"), 401, "unauthorized")
    _error(client.get("/v1/collections", headers={"X-API-Key": "key-one-12345"}), 401)
    assert client.get("/v1/collections", headers={"X-API-Key": "key-two-123456"}).status_code == 200
    assert client.get("/v1/collections", headers={"Authorization": "Bearer key-one-123456"}).status_code == 200
    _error(client.get("/metrics"), 401)


def test_rate_limit_answers_429_with_retry_after(make_client):
    client = make_client(rate_limit_per_minute=6, rate_limit_burst=2)
    assert client.get("/v1/collections").status_code == 200
    assert client.get("/v1/collections").status_code == 200
    refused = client.get("/v1/collections")
    _error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert client.get("/healthz").status_code == 200  # health is never limited


@pytest.mark.parametrize("origin,allowed", [("http://ui.example", True), ("http://evil.example", False)])
def test_cors_is_configurable(make_client, origin, allowed):
    client = make_client(cors_origins="http://ui.example")
    response = client.options("/v1/search/text", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert (response.headers.get("access-control-allow-origin") == origin) is allowed


def test_a_corrupt_index_makes_readyz_say_why_and_the_rest_keeps_serving(make_client, tmp_path):
    data_dir = tmp_path / "data"
    client = make_client(data_dir)
    add_captions(client, "good")
    add_captions(client, "damaged")
    client.__exit__(None, None, None)  # closing writes each collection's snapshot
    snapshot_files = sorted((p for p in (data_dir / "damaged" / "snapshot").rglob("*") if p.is_file()),
                            key=lambda p: p.stat().st_size)
    victim = snapshot_files[-1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the middle of the largest file
    victim.write_bytes(bytes(data))

    again = make_client(data_dir)
    ready = again.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["collection:good"] == "ok" and "Corrupt" in checks["collection:damaged"]
    assert again.get("/healthz").status_code == 200
    _error(again.post("/v1/search/text", json={"query": "a dog", "collection": "damaged"}), 503, "unavailable")
    good = again.post("/v1/search/text", json={"query": "a dog", "collection": "good", "k": 100}).json()
    assert len(good["results"]) == len(CAPTIONS)
