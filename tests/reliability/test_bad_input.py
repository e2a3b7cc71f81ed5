"""Bad input never hurts the service: each gets a 4xx with a clear JSON error, and nothing is lost."""

from __future__ import annotations

import struct
import zlib

import pytest

from tests.service.conftest import CAPTIONS, add_captions, add_images, png_bytes


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


# --- the same and more against a real uvicorn (`prolip-retrieval serve`) over loopback sockets

KEY = "reliability-key-0123456789"
AUTH = {"X-API-Key": KEY}
CLIENT_TIMEOUT = 30.0  # "answered before the client gave up": no other timing is judged
RSS_GROWTH_BOUND = 200 * 2**20  # the whole barrage may not leave the server this much bigger


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, model_dir):
    import httpx

    from .conftest import Server

    root = tmp_path_factory.mktemp("keyed")
    jobs_root = root / "corpora"
    jobs_root.mkdir()
    server = Server(root / "data", model_dir, env={"PROLIP_API_KEYS": KEY, "PROLIP_JOB_ROOTS": str(jobs_root),
                                                   "OMP_NUM_THREADS": "1"})
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT, headers=AUTH) as http:
            add_captions(http)
        yield server
    finally:
        server.stop()


def _raw_request(port: int, head: bytes, body_chunks, read_timeout: float = CLIENT_TIMEOUT) -> int:
    """Send a request over a raw socket (for lying or missing Content-Length); returns the status code."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed early: exactly what it should do
        response = b""
        while b"\r\n" not in response:
            data = sock.recv(4096)
            if not data:
                break
            response += data
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split()[1])


def _hundred_mb():
    block = b"z" * 2**20
    for _ in range(100):
        yield block


def test_real_server_answers_every_bad_input_with_a_4xx_and_stays_the_same(keyed_server):
    import httpx

    from .conftest import rss_bytes

    search = {"query": "a dog", "collection": "captions", "k": 5}
    with httpx.Client(base_url=keyed_server.url, timeout=CLIENT_TIMEOUT, headers=AUTH) as http:
        before = http.post("/v1/search/text", json=search).json()["results"]
        rss_before = rss_bytes(keyed_server.process.pid)

        def image(data: bytes, name: str = "x.png"):
            return http.post("/v1/search/image", files={"file": (name, data, "image/png")},
                             data={"collection": "captions", "k": "3"})

        truncated_jpeg = _jpeg_bytes()[:200]
        cases = {
            "bomb 40000x40000 png": (image(bomb_png(40_000, 40_000)), 422),
            "truncated png": (image(png_bytes(3)[:100]), 422),
            "truncated jpeg": (image(truncated_jpeg, "x.jpg"), 422),
            "0-byte upload": (image(b""), 422),
            "non-image upload": (image(b"%PDF-1.4 not an image"), 422),
            "10 MB text": (http.post("/v1/search/text", json={**search, "query": "a " * 5_000_000}), 413),
            "invalid utf-8": (http.post("/v1/search/text", content=b'{"query": "\xff\xfe", "collection": "captions"}',
                                        headers={"content-type": "application/json"}), 400),
            "control characters": (http.post("/v1/search/text", json={**search, "query": "a\x00dog\x1b[2J"}), 422),
            "k=0": (http.post("/v1/search/text", json={**search, "k": 0}), 422),
            "k=-1": (http.post("/v1/search/text", json={**search, "k": -1}), 422),
            "k=1e9": (http.post("/v1/search/text", json={**search, "k": 10**9}), 422),
            "unknown collection": (http.post("/v1/search/text", json={**search, "collection": "nope"}), 404),
            "path traversal in job source": (http.post("/v1/jobs", json={"source": "../../../../etc",
                                                                          "collection": "x"}), 403),
            "absolute path outside roots": (http.post("/v1/jobs", json={"source": "/etc", "collection": "x"}), 403),
            "10k-field multipart": (http.post("/v1/collections/images/items",
                                              files=[("files", ("a.png", png_bytes(1), "image/png"))],
                                              data={f"f{i}": "v" for i in range(10_000)}), 4),
            "100 MB chunked body, no Content-Length": (
                http.post("/v1/search/text", content=_hundred_mb(), headers={"content-type": "application/json"}), 413),
        }
        for label, (response, expected) in cases.items():
            if expected == 4:
                assert 400 <= response.status_code < 500, (label, response.status_code, response.text[:300])
            else:
                assert response.status_code == expected, (label, response.text[:300])
            assert response.json()["error"]["message"], label

        head = (b"POST /v1/search/text HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode()
                + b"\r\nContent-Type: application/json\r\n")
        # declares 100 MB: refused from the header, before the body is read
        assert _raw_request(keyed_server.port, head + b"Content-Length: 104857600\r\n\r\n", _hundred_mb()) == 413
        # declares 100 bytes and sends 100 MB: the first 100 bytes are bad JSON, the rest is never a request
        assert 400 <= _raw_request(keyed_server.port, head + b"Content-Length: 100\r\n\r\n", _hundred_mb()) < 500
        # no Content-Length and no chunking: HTTP/1.1 says the body is empty
        assert 400 <= _raw_request(keyed_server.port, head + b"\r\n", [b"{" * 1000]) < 500

        after = http.post("/v1/search/text", json=search).json()["results"]
        rss_after = rss_bytes(keyed_server.process.pid)
    assert after == before
    assert rss_after - rss_before < RSS_GROWTH_BOUND, (rss_before, rss_after)


def _jpeg_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _operations(spec: dict):
    for path, methods in spec["paths"].items():
        for method in methods:
            if method in {"get", "post", "put", "delete", "patch"}:
                yield method.upper(), path.replace("{name}", "captions").replace("{item_id}", "x").replace(
                    "{job_id}", "x")


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": ""}, {"X-API-Key": "wrong-key"},
                                     {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong-key"},
                                     {"X-API-Key": KEY[:-1]}],
                         ids=["missing", "empty", "wrong", "empty-bearer", "wrong-bearer", "prefix"])
def test_every_route_but_health_needs_the_key(keyed_server, headers):
    import httpx

    spec = httpx.get(keyed_server.url + "/openapi.json", headers=AUTH, timeout=CLIENT_TIMEOUT).json()
    operations = list(_operations(spec))
    assert len(operations) >= 20
    with httpx.Client(base_url=keyed_server.url, timeout=CLIENT_TIMEOUT) as http:
        for method, path in operations:
            response = http.request(method, path, headers=headers)
            if path in ("/healthz", "/readyz"):
                assert response.status_code == 200, (method, path)
                continue
            assert response.status_code == 401, (method, path, response.status_code, response.text[:200])
            assert response.json()["error"]["code"] == "unauthorized"
        assert http.get("/metrics", headers=headers).status_code == 401


def test_api_keys_are_compared_in_constant_time(monkeypatch):
    import hmac

    from service.security import ApiKeys

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((len(a), len(b))) or real(a, b))
    keys = ApiKeys(["first-key-0123", "second-key-456789"])
    keys.check("second-key-456789")
    with pytest.raises(Exception, match="invalid API key"):
        keys.check("f")
    # every configured key compared each time, on equal-length digests (no length or position leak)
    assert calls == [(32, 32)] * 4


def test_a_burst_over_the_rate_limit_gets_429_with_retry_after(tmp_path, model_dir):
    import httpx

    from .conftest import Server

    server = Server(tmp_path / "data", model_dir, env={"PROLIP_RATE_LIMIT_PER_MINUTE": "30",
                                                       "PROLIP_RATE_LIMIT_BURST": "5", "OMP_NUM_THREADS": "1"})
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as http:
            statuses = [http.get("/v1/collections") for _ in range(12)]
        codes = [r.status_code for r in statuses]
        assert codes[:5] == [200] * 5 and codes.count(429) >= 6, codes
        refused = next(r for r in statuses if r.status_code == 429)
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["error"]["code"] == "rate_limited"
    finally:
        server.stop()


def _cpu_seconds(pid: int) -> float:
    import os
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_huge_json_bodies_are_refused_at_a_cost_proportional_to_what_is_accepted(keyed_server):
    """Issue #16, defect 8: 21 MB holding 1.5 M texts took 5 s of CPU and +900 MB before "at most 256 texts".
    Here: 1.5 M texts, 1 M items, one item with 2 M metadata values, each far under the body limit."""
    import json

    import httpx

    from .conftest import rss_bytes

    bodies = {
        "/v1/embed/text": {"texts": ["one two three"] * 1_500_000},
        "/v1/collections/flood/items": {"items": [{"text": "a b"}] * 1_000_000},
        "/v1/collections/deep/items": {"items": [{"text": "a", "metadata": {"v": list(range(2_000_000))}}]},
    }
    pid = keyed_server.process.pid
    with httpx.Client(base_url=keyed_server.url, timeout=CLIENT_TIMEOUT, headers=AUTH) as http:
        for path, document in bodies.items():
            body = json.dumps(document).encode()
            assert len(body) < 64 * 2**20  # under the body limit: the shape is what refuses it
            rss, cpu = rss_bytes(pid), _cpu_seconds(pid)
            response = http.post(path, content=body, headers={"content-type": "application/json"})
            spent, grew = _cpu_seconds(pid) - cpu, rss_bytes(pid) - rss
            assert response.status_code in (413, 422), (path, response.status_code, response.text[:300])
            assert response.json()["error"]["message"], path
            # receiving the bytes costs something; building millions of objects (seconds, ~1 GB) does not happen
            assert spent < 1.5, (path, spent)
            assert grew < 160 * 2**20, (path, grew)
        # the same in a multipart form: the JSON metadata of an image upload is refused by its length,
        # before it is parsed (and a form part over 1 MiB by Starlette's parser)
        for values in (150_000, 2_000_000):
            metadata = json.dumps({"v": list(range(values))})
            rss, cpu = rss_bytes(pid), _cpu_seconds(pid)
            response = http.post("/v1/collections/formflood/items",
                                 files={"files": ("a.png", png_bytes(1), "image/png")}, data={"metadata": metadata})
            spent, grew = _cpu_seconds(pid) - cpu, rss_bytes(pid) - rss
            assert response.status_code == (413 if len(metadata) < 2**20 else 400), response.text[:300]
            assert spent < 1.5 and grew < 160 * 2**20, (spent, grew)
        assert http.get("/v1/collections/flood").status_code == 404  # nothing was created
