"""Demo collections: built into a new data dir only, rebuilt after an interrupted bootstrap."""

from __future__ import annotations

from service.demo import PENDING_MARKER

from .conftest import png_bytes


def _sizes(client) -> dict[str, int]:
    return {c["name"]: c["size"] for c in client.get("/v1/collections").json()["collections"]}


def test_new_data_dir_gets_searchable_demo_collections(make_client, tmp_path):
    data_dir = tmp_path / "fresh"
    client = make_client(data_dir, demo=True, demo_scenes=12)
    sizes = _sizes(client)
    assert sizes["demo-images"] == 12
    assert 4 < sizes["demo-captions"] <= 12 * 4  # distinct captions of all four levels
    assert not (data_dir / PENDING_MARKER).exists()
    hits = client.post("/v1/search/text", json={"query": "a red circle", "collection": "demo-images", "k": 3})
    assert hits.status_code == 200 and len(hits.json()["results"]) == 3
    first = hits.json()["results"][0]
    assert len(first["metadata"]["captions"]) == 4
    item = client.get(f"/v1/collections/demo-images/items/{first['id']}").json()
    assert client.get(item["image_url"]).content[:4] == b"\x89PNG"
    levels = {r["metadata"]["level"] for r in client.post(
        "/v1/search/text", json={"query": "an object", "collection": "demo-captions", "k": 50}).json()["results"]}
    assert levels == {0, 1, 2, 3}
    # uncertainty endpoints default to the demo collection of the same modality
    texts = client.post("/v1/uncertainty/text", json={"texts": ["a circle"]}).json()
    assert texts["collection"] == "demo-captions" and texts["items"][0]["percentile"] is not None
    images = client.post("/v1/uncertainty/image", files={"files": ("a.png", png_bytes(1), "image/png")}).json()
    assert images["collection"] == "demo-images"


def test_an_existing_data_dir_is_opened_as_it_is(make_client, tmp_path):
    data_dir = tmp_path / "used"
    client = make_client(data_dir, demo=True, demo_scenes=6)
    client.delete("/v1/collections/demo-images/items/test-000000")
    client.__exit__(None, None, None)
    again = make_client(data_dir, demo=True, demo_scenes=6)
    assert _sizes(again)["demo-images"] == 5  # not rebuilt, the deletion stands

    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "notes.txt").write_text("not empty")
    assert _sizes(make_client(other, demo=True, demo_scenes=6)) == {}


def test_an_interrupted_bootstrap_is_redone(make_client, tmp_path):
    data_dir = tmp_path / "interrupted"
    client = make_client(data_dir, demo=True, demo_scenes=6)
    client.delete("/v1/collections/demo-images/items/test-000000")
    client.__exit__(None, None, None)
    (data_dir / PENDING_MARKER).write_text("as if the process died while building\n")
    again = make_client(data_dir, demo=True, demo_scenes=6)
    assert _sizes(again)["demo-images"] == 6
    assert not (data_dir / PENDING_MARKER).exists()
