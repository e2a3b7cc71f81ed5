"""The API through the real ASGI app, lifespan included: search, uncertainty, embeddings, collections."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from models import gaussian

from .conftest import CAPTIONS, add_captions, add_images, png_bytes


def test_text_search_ranks_by_csd_with_the_models_pair_probability(client, encoder):
    added = add_captions(client)
    assert added["created"] is True and added["size"] == len(CAPTIONS)
    response = client.post("/v1/search/text", json={"query": "a red circle", "collection": "captions", "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert len(results) == 5
    csds = [r["csd"] for r in results]
    assert csds == sorted(csds)
    # every score agrees with the model's own math on freshly encoded Gaussians
    query = encoder.encode_texts(["a red circle"])
    items = encoder.encode_texts([r["metadata"]["text"] for r in results])
    expected_p = gaussian.match_probability(query.mean.astype(np.float64), query.logvar.astype(np.float64),
                                            items.mean.astype(np.float64), items.logvar.astype(np.float64),
                                            encoder.logit_scale, encoder.logit_bias)[0]
    np.testing.assert_allclose([r["pair_probability"] for r in results], expected_p, rtol=1e-4)
    # no calibrator for this model (and a text query on texts): no calibrated probability, and it says so
    assert body["calibrated"] is False and all(r["probability"] is None for r in results)
    np.testing.assert_allclose(csds, gaussian.csd_unit(query.mean, query.logvar, items.mean, items.logvar)[0],
                               atol=1e-4)
    assert math.isclose(body["query"]["uncertainty"], float(query.uncertainty[0]), rel_tol=1e-5)
    assert 0 <= body["query"]["percentile"] <= 100


def test_probability_without_a_calibrator_is_refused_and_says_why(client):
    add_captions(client)
    add_images(client)
    for body in ({"query": "a dog", "collection": "images", "min_probability": 0.5},
                 {"query": "a dog", "collection": "images", "rank": "probability"}):
        response = client.post("/v1/search/text", json=body)
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "not_calibrated" and "prolip-retrieval calibrate" in error["message"]
    image = client.post("/v1/search/image", files={"file": ("q.png", png_bytes(3), "image/png")},
                        data={"collection": "captions", "min_probability": "0.5"})
    assert image.status_code == 409 and image.json()["error"]["code"] == "not_calibrated"
    ranked = client.post("/v1/rank", data={"query": "a dog", "candidates": ["a", "b"], "rank": "probability"})
    assert ranked.status_code == 409 and ranked.json()["error"]["code"] == "not_calibrated"


def test_rank_modes_order_by_their_own_score(client):
    add_captions(client)
    for rank in ("csd", "cosine", "inclusion"):  # probability: tests/service/test_probability_api.py
        body = client.post("/v1/search/text", json={"query": "a photo of a cat", "collection": "captions",
                                                    "k": 8, "rank": rank}).json()
        assert body["rank"] == rank
        scores = [r["score"] for r in body["results"]]
        if rank == "csd":
            assert scores == sorted(scores) and scores == [r["csd"] for r in body["results"]]
        else:
            assert scores == sorted(scores, reverse=True)
        if rank == "cosine":  # the reference model is untrained: only an identical text is surely closest
            assert scores == [r["cosine"] for r in body["results"]]
            assert body["results"][0]["metadata"]["text"] == "a photo of a cat"
        if rank == "inclusion":
            assert all(r["inclusion"] is not None for r in body["results"])


def test_image_collection_roundtrip(client):
    added = add_images(client)
    assert added["ids"] == [f"img-{s}" for s in range(6)]
    # image -> image: an indexed image is its own nearest mean
    response = client.post("/v1/search/image", files={"file": ("q.png", png_bytes(3), "image/png")},
                           data={"collection": "images", "k": "3", "rank": "cosine"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["id"] == "img-3"
    item = client.get("/v1/collections/images/items/img-3").json()
    assert item["modality"] == "image" and item["metadata"]["filename"] == "img3.png"
    assert item["metadata"]["media_type"] == "image/png"
    image = client.get(item["image_url"])
    assert image.status_code == 200 and image.content == png_bytes(3)
    assert image.headers["content-type"] == "image/png"
    # delete: gone from item lookups, searches and sizes
    assert client.delete("/v1/collections/images/items/img-3").json() == {"deleted": "img-3"}
    assert client.get("/v1/collections/images/items/img-3").status_code == 404
    assert client.get("/v1/collections/images/items/img-3/image").status_code == 404
    again = client.post("/v1/search/image", files={"file": ("q.png", png_bytes(3), "image/png")},
                        data={"collection": "images", "k": "10"}).json()
    assert "img-3" not in [r["id"] for r in again["results"]] and len(again["results"]) == 5


def test_image_to_text_search(client):
    add_captions(client)
    response = client.post("/v1/search/image", files={"file": ("q.png", png_bytes(1), "image/png")},
                           data={"collection": "captions", "k": "4", "rank": "cosine"})
    assert response.status_code == 200
    assert all("text" in r["metadata"] for r in response.json()["results"])


def test_upserts_by_content_id_do_not_duplicate(client):
    first = add_captions(client, texts=["a red circle", "a blue square"])
    second = add_captions(client, texts=["a red circle"])
    assert second["ids"] == first["ids"][:1] and second["size"] == 2 and second["created"] is False


def test_collections_list_and_stats(client):
    add_captions(client)
    add_images(client)
    listed = {c["name"]: c for c in client.get("/v1/collections").json()["collections"]}
    assert listed["captions"]["modality"] == "text" and listed["captions"]["size"] == len(CAPTIONS)
    assert listed["images"]["modality"] == "image" and listed["images"]["dim"] == 64
    stats = client.get("/v1/collections/captions", params={"extremes": 2}).json()
    assert sum(b["count"] for b in stats["uncertainty_histogram"]) == len(CAPTIONS)
    assert len(stats["most_certain"]) == 2 and len(stats["most_uncertain"]) == 2
    assert stats["most_certain"][0]["uncertainty"] <= stats["most_uncertain"][0]["uncertainty"]


def test_uncertainty_endpoints_report_percentiles_against_a_collection(client, encoder):
    texts = ["a red circle", "an object"]
    without = client.post("/v1/uncertainty/text", json={"texts": texts}).json()
    assert without["collection"] is None and without["items"][0]["percentile"] is None
    add_captions(client)
    body = client.post("/v1/uncertainty/text", json={"texts": texts, "collection": "captions"}).json()
    assert body["collection"] == "captions"
    np.testing.assert_allclose([i["uncertainty"] for i in body["items"]], encoder.encode_texts(texts).uncertainty,
                               rtol=1e-5)
    assert all(0 <= i["percentile"] <= 100 for i in body["items"])
    images = client.post("/v1/uncertainty/image", files=[("files", ("a.png", png_bytes(1), "image/png")),
                                                         ("files", ("b.png", png_bytes(2), "image/png"))])
    assert images.status_code == 200 and [i["index"] for i in images.json()["items"]] == [0, 1]


def test_embeddings_are_the_encoders(client, encoder):
    body = client.post("/v1/embed/text", json={"texts": ["a red circle", "a dog"]}).json()
    expected = encoder.encode_texts(["a red circle", "a dog"])
    assert body["dim"] == 64 and len(body["items"]) == 2
    np.testing.assert_allclose([i["mean"] for i in body["items"]], expected.mean, atol=1e-6)
    np.testing.assert_allclose([i["logvar"] for i in body["items"]], expected.logvar, atol=1e-6)
    image = client.post("/v1/embed/image", files={"files": ("a.png", png_bytes(5), "image/png")}).json()
    np.testing.assert_allclose(np.linalg.norm(image["items"][0]["mean"]), 1.0, rtol=1e-5)


def test_rank_texts_and_zero_shot_with_prompt_filtering(client):
    response = client.post("/v1/rank", data={"query": "a red circle",
                                             "candidates": ["a red circle", "a blue square", "a dog"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["results"][0]["label"] == "a red circle"
    assert math.isclose(sum(r["class_probability"] for r in body["results"]), 1.0, rel_tol=1e-6)
    zero_shot = client.post(
        "/v1/rank", files={"file": ("q.png", png_bytes(2), "image/png")},
        data={"candidates": ["circle", "square", "dog"], "templates": ["a photo of a {}", "a {}", "the {}"],
              "prompt_filter": "most_certain", "prompt_coeff": "2"})
    assert zero_shot.status_code == 200, zero_shot.text
    results = zero_shot.json()["results"]
    assert {r["label"] for r in results} == {"circle", "square", "dog"}
    assert all(len(r["prompts_kept"]) == 2 for r in results)
    csds = [r["csd"] for r in results]
    assert csds == sorted(csds)
    # no prompt is dropped unless a filter is asked for
    plain = client.post("/v1/rank", files={"file": ("q.png", png_bytes(2), "image/png")},
                        data={"candidates": ["circle", "dog"], "templates": ["a photo of a {}", "a {}", "the {}"]})
    assert all(len(r["prompts_kept"]) == 3 and r["prompt_weights"] is None for r in plain.json()["results"])


def test_rank_refuses_ambiguous_requests(client):
    both = client.post("/v1/rank", data={"query": "x", "candidates": ["a"]},
                       files={"file": ("q.png", png_bytes(1), "image/png")})
    assert both.status_code == 422 and "exactly one query" in both.json()["error"]["message"]
    none = client.post("/v1/rank", data={"query": "a dog"})
    assert none.status_code == 422
    bad_template = client.post("/v1/rank", data={"query": "a dog", "candidates": ["a"], "templates": ["no slot"]})
    assert bad_template.status_code == 422 and "{}" in bad_template.json()["error"]["message"]
    image_templates = client.post("/v1/rank", data={"query": "a dog", "templates": ["a {}"]},
                                  files={"candidate_files": ("c.png", png_bytes(1), "image/png")})
    assert image_templates.status_code == 422 and "text candidates" in image_templates.json()["error"]["message"]
    blank = client.post("/v1/embed/text", json={"texts": [" \u3000\t"]})
    assert blank.status_code == 422 and "white space" in blank.json()["error"]["message"]
    form = client.get("/openapi.json").json()["components"]["schemas"]["RankForm"]
    assert {"oneOf": [{"required": ["query"]}, {"required": ["file"]}]} in form["allOf"]


def test_traverse_orders_captions_and_reports_scores(client):
    add_captions(client)
    for method in ("walk", "inclusion"):
        response = client.post("/v1/traverse/image", files={"file": ("q.png", png_bytes(4), "image/png")},
                               data={"collection": "captions", "method": method, "min_probability": "0"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["method"] == method and body["captions"]
        ids = [c["id"] for c in body["captions"]]
        assert len(ids) == len(set(ids))
        assert all(c["text"] in CAPTIONS for c in body["captions"])
        if method == "inclusion":
            u = [c["uncertainty"] for c in body["captions"]]
            assert u == sorted(u)


def test_health_ready_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    add_captions(client)
    client.post("/v1/search/text", json={"query": "a dog", "collection": "captions"})
    metrics = client.get("/metrics").text
    assert 'prolip_request_duration_seconds_count{method="POST",route="/v1/search/text",status="200"}' in metrics
    assert 'prolip_index_items{collection="captions",modality="text"} 8.0' in metrics
    assert "prolip_batch_size_bucket" in metrics


def test_openapi_and_docs_are_published(client):
    schema = client.get("/openapi.json").json()
    for path in ("/v1/search/text", "/v1/search/image", "/v1/uncertainty/text", "/v1/uncertainty/image",
                 "/v1/embed/text", "/v1/embed/image", "/v1/collections/{name}/items",
                 "/v1/collections/{name}/items/{item_id}", "/v1/collections", "/v1/collections/{name}",
                 "/v1/jobs", "/v1/jobs/{job_id}", "/v1/rank", "/v1/traverse/image", "/healthz", "/readyz",
                 "/metrics"):
        assert path in schema["paths"], path
    assert set(schema["paths"]["/v1/collections/{name}/items"]["post"]["requestBody"]["content"]) == {
        "application/json", "multipart/form-data"}
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_every_file_from_the_service_itself(client, page):
    html = client.get(page).text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"""url: ?["']([^"']+)["']""", html)
    scripts = [url for url in assets if url.endswith(".js")]
    assert scripts, f"{page} names no script"
    for url in assets:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url


def test_openapi_states_this_deployments_limits_and_they_are_the_ones_applied(make_client):
    client = make_client(max_text_chars=40, max_texts=3, max_files=2, max_k=7)
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]

    def resolve(node):
        return components[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    embed = resolve(schema["paths"]["/v1/embed/text"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert embed["properties"]["texts"]["maxItems"] == 3
    assert embed["properties"]["texts"]["items"]["maxLength"] == 40
    search = resolve(schema["paths"]["/v1/search/text"]["post"]["requestBody"]["content"]["application/json"]
                     ["schema"])
    assert search["properties"]["query"]["maxLength"] == 40 and search["properties"]["k"]["maximum"] == 7
    image = resolve(schema["paths"]["/v1/embed/image"]["post"]["requestBody"]["content"]["multipart/form-data"]
                    ["schema"])
    assert image["properties"]["files"]["maxItems"] == 2

    # what the document allows is accepted, one past it is refused
    assert client.post("/v1/embed/text", json={"texts": ["a" * 40] * 3}).status_code == 200
    assert client.post("/v1/embed/text", json={"texts": ["a" * 41]}).status_code == 413
    assert client.post("/v1/embed/text", json={"texts": ["a"] * 4}).status_code == 422
    assert client.post("/v1/search/text", json={"query": "a dog", "collection": "nowhere", "k": 8}).status_code == 422


def test_a_query_is_ranked_among_inputs_of_its_own_modality(client, encoder):
    add_images(client)
    add_captions(client)

    def search(query):
        return client.post("/v1/search/text", json={"query": query, "collection": "images"}).json()

    # a text searching images: no text collection to compare with yet, so no percentile
    assert search("an object")["query"] | {"uncertainty": None} == {
        "uncertainty": None, "percentile": None, "reference": None}
    # the demo collection of texts is the reference, not the images being searched
    add_captions(client, "demo-captions")
    general, specific = search("an object")["query"], search("a small white diamond on the left")["query"]
    assert general["reference"] == specific["reference"] == "demo-captions"
    expected = client.post("/v1/uncertainty/text", json={"texts": ["an object"], "collection": "demo-captions"})
    assert general["percentile"] == pytest.approx(expected.json()["items"][0]["percentile"])
    # a text searching texts is ranked among them
    own = client.post("/v1/search/text", json={"query": "an object", "collection": "captions"}).json()["query"]
    assert own["reference"] == "captions"
    image = client.post("/v1/search/image", files={"file": ("q.png", png_bytes(3), "image/png")},
                        data={"collection": "images"}).json()["query"]
    assert image["reference"] == "images" and 0 <= image["percentile"] <= 100


def test_searches_racing_a_drop_answer_404_once_it_is_gone(client):
    """Issue #16, defect 9: a search that holds the collection while it is dropped says it is gone (404),
    not that it is closed (503)."""
    from concurrent.futures import ThreadPoolExecutor

    from indexer.errors import UnknownCollectionError
    from service.errors import translate

    add_captions(client, "doomed")
    state = client.app.state.service
    held = state.catalog.get("doomed")
    query = {"query": "a dog", "collection": "doomed", "k": 3}

    def search(_):
        return client.post("/v1/search/text", json=query).status_code

    with ThreadPoolExecutor(4) as pool:
        racing = [pool.submit(search, i) for i in range(40)]
        assert client.delete("/v1/collections/doomed").status_code == 200
        statuses = {future.result() for future in racing}
    assert statuses <= {200, 404}, statuses
    with pytest.raises(UnknownCollectionError) as gone:
        unit = np.full((1, held.dim), held.dim ** -0.5, np.float32)
        held.search(unit, np.zeros_like(unit))
    assert translate(gone.value).status_code == 404


def test_inclusion_means_one_thing_in_every_route(client):
    """Issue #16, defect 14: inclusion was about +7..10 in traverse and /rank but about -9.6 in search's
    inclusion mode: one definition (the image inside the text), one direction, in every route and schema."""
    add_captions(client)
    add_images(client)
    text, image = "a red circle", png_bytes(2)
    e_text = client.post("/v1/embed/text", json={"texts": [text]}).json()["items"][0]
    e_image = client.post("/v1/embed/image", files={"files": ("i.png", image, "image/png")}).json()["items"][0]
    as_array = [np.asarray([e[key]], np.float64) for e in (e_image, e_text) for key in ("mean", "logvar")]
    truth = float(gaussian.inclusion_margin(*as_array)[0, 0])  # image in text
    found = {}
    hits = client.post("/v1/search/text", json={"query": text, "collection": "images", "k": 100,
                                                "rank": "inclusion"}).json()["results"]
    found["search text->images"] = next(h["inclusion"] for h in hits if h["id"] == "img-2")
    assert [h["inclusion"] for h in hits] == sorted((h["inclusion"] for h in hits), reverse=True)
    hits = client.post("/v1/search/image", files={"file": ("q.png", image, "image/png")},
                       data={"collection": "captions", "k": "100", "rank": "inclusion"}).json()["results"]
    found["search image->texts"] = next(h["inclusion"] for h in hits if h["metadata"]["text"] == text)
    found["rank text->images"] = client.post("/v1/rank", data={"query": text}, files={
        "candidate_files": ("c.png", image, "image/png")}).json()["results"][0]["inclusion"]
    found["rank image->texts"] = client.post("/v1/rank", data={"candidates": [text]}, files={
        "file": ("q.png", image, "image/png")}).json()["results"][0]["inclusion"]
    steps = client.post("/v1/traverse/image", files={"file": ("q.png", image, "image/png")},
                        data={"collection": "captions", "method": "inclusion", "min_probability": "0",
                              "k": "100"}).json()["captions"]
    found["traverse"] = next(s["inclusion"] for s in steps if s["text"] == text)
    for route, value in found.items():
        assert value == pytest.approx(truth, abs=2e-3), (route, value, truth)
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    from service.scoring import INCLUSION_MEANING

    assert "image lies inside the text" in INCLUSION_MEANING
    for name in ("SearchHit", "RankedCandidate", "TraversalStep"):
        assert schema[name]["properties"]["inclusion"]["description"].endswith(INCLUSION_MEANING), name
