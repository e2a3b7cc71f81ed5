"""Every model family serves the same API: PCME++ (Gaussians, its own match logit) and CLIP (points, no uncertainty)."""

from __future__ import annotations

import math
import shutil

import httpx
import pytest

from tests.conftest import PCMEPP_REFERENCE

from .conftest import Server, add_captions, add_images, make_settings, png_bytes


def test_pcmepp_folder_serves_search_from_the_cli(tmp_path):
    """`prolip-retrieval serve --model <released PCME++ folder>` on a fresh data dir: no tokenizer file needed.

    The fixture's variances are large (S ~ 100 per text), so its own negative_scale (7.5) would put every
    probability at 0; the copy gets a small one and a shift, and the service must use those.
    """
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "pcmepp"
    shutil.copytree(PCMEPP_REFERENCE / "model", folder)
    state = load_file(folder / "model.safetensors")
    negative_scale, shift = 0.02, 3.0
    state["negative_scale"].fill_(negative_scale)
    state["shift"].fill_(shift)
    save_file(state, folder / "model.safetensors")
    server = Server(tmp_path / "data", folder, env={"PROLIP_MODEL_SOURCE": ""}, args=("--model", str(folder)))
    try:
        server.wait_ready(path="/readyz", timeout=90)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            add_captions(http)
            add_images(http, seeds=range(3))
            body = http.post("/v1/search/text", json={"query": "a photo of a dog", "collection": "captions",
                                                      "k": 3}).json()
            assert body["model_family"] == "pcmepp" and body["deterministic"] is False
            assert body["query"]["uncertainty"] > 0 and len(body["results"]) == 3
            csds = [hit["csd"] for hit in body["results"]]
            assert csds == sorted(csds)
            assert body["calibrated"] is False  # no calibration.json beside it: no calibrated probability
            for hit in body["results"]:  # the raw pair probability: sigmoid(-negative_scale * CSD + shift)
                expected = 1 / (1 + math.exp(negative_scale * hit["csd"] - shift))
                assert 0.01 < expected < 0.99 and hit["pair_probability"] == pytest.approx(expected, rel=1e-6)
                assert hit["probability"] is None
            image = http.post("/v1/search/image", files={"file": ("q.png", png_bytes(9), "image/png")},
                              data={"collection": "images", "k": 2, "rank": "inclusion"})
            assert image.status_code == 200 and image.json()["results"][0]["inclusion"] is not None
            listed = {c["name"]: c for c in http.get("/v1/collections").json()["collections"]}
            assert (listed["captions"]["model_family"], listed["captions"]["deterministic"]) == ("pcmepp", False)
    finally:
        server.stop()


def test_clip_checkpoint_serves_the_demo_on_a_fresh_data_dir(tmp_path, clip_model_dir, clip_encoder):
    """A deterministic CLIP checkpoint on a fresh data dir: demo collections of points, search by CSD = 2 - 2 cos.

    Through the ASGI app with the settings `serve --model` builds; tests/ui/test_deterministic_ui.py
    runs the same checkpoint in a real `prolip-retrieval serve` process.
    """
    from fastapi.testclient import TestClient

    from service.app import create_app

    settings = make_settings(tmp_path / "data", clip_model_dir, demo=True, demo_scenes=30)
    with TestClient(create_app(settings, encoder=clip_encoder), raise_server_exceptions=False) as http:
        listed = {c["name"]: c for c in http.get("/v1/collections").json()["collections"]}
        assert {name: (c["model_family"], c["deterministic"]) for name, c in listed.items()} == {
            "demo-images": ("clip", True), "demo-captions": ("clip", True)}
        body = http.post("/v1/search/text", json={"query": "a red circle", "collection": "demo-images",
                                                  "k": 5}).json()
        assert body["deterministic"] is True and body["query"] == {"uncertainty": None, "percentile": None,
                                                                    "reference": None}
        assert len(body["results"]) == 5
        for hit in body["results"]:
            assert hit["uncertainty"] is None and hit["csd"] == pytest.approx(2 - 2 * hit["cosine"], abs=1e-5)
        refused = http.post("/v1/search/text", json={"query": "a circle", "collection": "demo-images",
                                                     "rank": "inclusion"})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "model_without_uncertainty"


@pytest.fixture
def clip_client(tmp_path, clip_model_dir, clip_encoder):
    from fastapi.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(make_settings(tmp_path / "data", clip_model_dir), encoder=clip_encoder),
                    raise_server_exceptions=False) as client:
        yield client


def test_clip_api_reports_no_uncertainty_and_says_why(clip_client):
    add_captions(clip_client)
    add_images(clip_client, seeds=range(4))
    cosine = clip_client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "k": 8,
                                                       "rank": "cosine"}).json()["results"]
    csd = clip_client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "k": 8}).json()
    assert [h["id"] for h in csd["results"]] == [h["id"] for h in cosine]  # CSD of points ranks as cosine
    assert csd["model_family"] == "clip"
    for path, payload in (("/v1/uncertainty/text", {"texts": ["a dog"]}),):
        response = clip_client.post(path, json=payload)
        assert response.status_code == 422 and "deterministic" in response.json()["error"]["message"]
    traverse = clip_client.post("/v1/traverse/image", files={"file": ("q.png", png_bytes(1), "image/png")},
                                data={"collection": "captions"})
    assert traverse.status_code == 422 and traverse.json()["error"]["code"] == "model_without_uncertainty"
    embedded = clip_client.post("/v1/embed/text", json={"texts": ["a dog", "a cat"]}).json()
    assert embedded["model_family"] == "clip"
    assert all(item["logvar"] is None and item["uncertainty"] is None for item in embedded["items"])
    ranked = clip_client.post("/v1/rank", data={"query": "a dog", "candidates": ["dog", "cat"],
                                                "templates": ["a photo of a {}", "the {}"]}).json()
    assert ranked["query"]["uncertainty"] is None
    assert all(r["inclusion"] is None and r["uncertainty"] is None and len(r["prompts_kept"]) == 2
               for r in ranked["results"])
    stats = clip_client.get("/v1/collections/images").json()
    assert (stats["deterministic"], stats["uncertainty_histogram"], stats["most_certain"]) == (True, [], [])
    item = clip_client.get("/v1/collections/images/items/img-0").json()
    assert (item["uncertainty"], item["percentile"]) == (None, None)
    schema = clip_client.get("/openapi.json").json()["components"]["schemas"]
    assert "deterministic" in schema["SearchHit"]["properties"]["uncertainty"]["description"]


def test_a_collection_refuses_another_models_queries(tmp_path, make_client, clip_model_dir, clip_encoder):
    """ProLIP-made captions, then a CLIP service on the same data dir: 409, naming both models."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    prolip = make_client(tmp_path / "data")
    add_captions(prolip)
    prolip.__exit__(None, None, None)
    with TestClient(create_app(make_settings(tmp_path / "data", clip_model_dir), encoder=clip_encoder),
                    raise_server_exceptions=False) as clip:
        response = clip.post("/v1/search/text", json={"query": "a dog", "collection": "captions"})
        assert response.status_code == 409
        assert clip_encoder.model_id in response.json()["error"]["message"]
        assert {c["name"]: c["model_family"] for c in clip.get("/v1/collections").json()["collections"]} == {
            "captions": "prolip"}


def test_clip_points_take_filters_pages_duplicates_and_more_like_this(clip_client):
    """The search options of issue #17 on a deterministic model: points, no logvar anywhere."""
    add_captions(clip_client)  # metadata {"n": i}
    where = {"field": "n", "range": {"lt": 4}}
    first = clip_client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "k": 3,
                                                      "filter": where, "collapse_duplicates": True}).json()
    rest = clip_client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "k": 3,
                                                     "filter": where, "collapse_duplicates": True,
                                                     "cursor": first["next_cursor"]}).json()
    shown = first["results"] + rest["results"]
    assert first["deterministic"] and first["matched"] == 4
    assert len(shown) + first["collapsed"] + rest["collapsed"] == 4 and all(h["metadata"]["n"] < 4 for h in shown)
    item_id = shown[0]["id"]
    similar = clip_client.post("/v1/search/item", json={"collection": "captions", "item_id": item_id, "k": 3}).json()
    assert item_id not in [h["id"] for h in similar["results"]] and similar["query"]["uncertainty"] is None
    point = clip_client.post("/v1/embed/text", json={"texts": ["a dog"]}).json()["items"][0]
    by_point = clip_client.post("/v1/search/embedding", json={"collection": "captions", "k": 3,
                                                              "mean": point["mean"]}).json()
    by_text = clip_client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "k": 3}).json()
    assert [h["id"] for h in by_point["results"]] == [h["id"] for h in by_text["results"]]
    with_logvar = clip_client.post("/v1/search/embedding", json={"collection": "captions", "mean": point["mean"],
                                                                 "logvar": [0.0] * len(point["mean"])})
    assert with_logvar.status_code == 422 and "deterministic" in with_logvar.json()["error"]["message"]
    ranked = clip_client.post("/v1/rank", data={"query": "a dog", "collection": "captions",
                                                "filter": '{"field": "n", "in": [1, 2]}'}).json()
    assert len(ranked["results"]) == 2 and all(r["uncertainty"] is None for r in ranked["results"])
