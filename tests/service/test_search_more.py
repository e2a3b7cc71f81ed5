"""Search options and query kinds through the real ASGI app: metadata filters, paging, duplicate collapsing,
more-like-this by item id, raw embeddings, image URLs, and /v1/rank over a collection's filtered items."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import pytest

from .conftest import CAPTIONS, add_images, png_bytes

TEXTS = CAPTIONS + ["a red square", "a blue circle", "a green circle", "a photo of a red dog", "a small cat",
                    "a large object on the left"]


CAPTION_ITEMS = [{"id": f"c{i:02d}", "text": text,
                  "metadata": {"n": i, "group": i % 3, "path": f"set{i % 2}/{i:02d}.txt", "tags": [f"t{i % 4}"],
                               "when": f"2021-{1 + i % 12:02d}-15"}} for i, text in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def client(tmp_path_factory, model_dir, encoder):
    """One app for the module's read-only tests: the captions above, and six images."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    from .conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("more") / "data", model_dir)
    with TestClient(create_app(settings, encoder=encoder), raise_server_exceptions=False) as opened:
        response = opened.post("/v1/collections/captions/items", json={"items": CAPTION_ITEMS})
        assert response.status_code == 200, response.text
        add_images(opened)
        yield opened


@pytest.fixture
def captions():
    return CAPTION_ITEMS


def search(client, **body):
    body = {"query": "a red circle", "collection": "captions", **body}
    response = client.post("/v1/search/text", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# ----------------------------------------------------------------------------- filters

FILTERS = [
    ({"field": "group", "eq": 1}, lambda m: m["group"] == 1),
    ({"field": "path", "prefix": "set0/"}, lambda m: m["path"].startswith("set0/")),
    ({"and": [{"field": "when", "range": {"gte": "2021-03-01", "lt": "2021-09-01"}},
              {"not": {"field": "tags", "contains": "t1"}}]},
     lambda m: "2021-03-01" <= m["when"] < "2021-09-01" and "t1" not in m["tags"]),
    ({"or": [{"field": "n", "in": [0, 5, 9]}, {"field": "n", "range": {"gt": 12}}]}, lambda m: m["n"] in (0, 5, 9)
     or m["n"] > 12),
]


@pytest.mark.parametrize("rank", ["csd", "cosine", "inclusion"])
def test_filtered_search_is_the_top_k_of_the_matching_items(client, captions, rank):
    everything = search(client, k=len(TEXTS), rank=rank)["results"]
    for raw, matches in FILTERS:
        body = search(client, k=4, rank=rank, filter=raw)
        expected = [hit["id"] for hit in everything if matches(hit["metadata"])]
        if rank != "inclusion":  # inclusion re-ranks a CSD shortlist: over all items vs within the filter
            assert [hit["id"] for hit in body["results"]] == expected[:4], raw
        assert len(body["results"]) == min(4, len(expected))
        assert all(matches(hit["metadata"]) for hit in body["results"])
        assert body["matched"] == len(expected)
    assert search(client)["matched"] is None


def test_filter_on_image_search_travels_as_json_in_the_form(make_client):
    client = make_client()
    add_images(client, seeds=range(6))
    client.post("/v1/collections/images/items",
                files=[("files", ("x.png", png_bytes(9), "image/png"))], data={"metadata": ['{"kind": "x"}']})
    query = {"file": ("q.png", png_bytes(1), "image/png")}
    body = client.post("/v1/search/image", files=query,
                       data={"collection": "images", "filter": '{"field": "kind", "eq": "x"}', "k": 3}).json()
    assert len(body["results"]) == 1 and body["results"][0]["metadata"]["kind"] == "x" and body["matched"] == 1
    refused = client.post("/v1/search/image", files=query, data={"collection": "images", "filter": "{kind: x}"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_filter"
    assert "not valid JSON" in refused.json()["error"]["message"]


MALFORMED = [
    ({"field": "n", "regex": "1.*"}, "filter: unknown operator 'regex'"),
    ({"field": "n", "in": [1, "a"]}, "filter.in: the values must all be strings, all numbers or all booleans"),
    ({"field": "n", "range": {"gte": "a", "lt": 3}}, "both bounds must be numbers or both strings"),
    ({"not": {"not": {"not": {"not": {"field": "n", "eq": 1}}}}}, "at most 3 and/or/not groups deep"),
    ({"or": [{"field": "n", "eq": i} for i in range(9)]}, "at most 8 filters per group"),
    ({"field": "n", "in": list(range(300))}, "1 to 256 values"),
    ({"and": [{"field": "n", "eq": 1}, {"field": "n", "prefix": True}]}, "filter.and[1].prefix: a prefix is a string"),
]


def test_malformed_filters_are_422_with_what_and_where(client):
    for raw, message in MALFORMED:
        for path, body in (("/v1/search/text", {"query": "a dog"}), ("/v1/search/item", {"item_id": "c01"}),
                           ("/v1/search/url", {"url": "http://example.invalid/x.png"})):
            response = client.post(path, json={"collection": "captions", "filter": raw, **body})
            assert response.status_code == 422
            error = response.json()["error"]
            assert error["code"] == "invalid_filter" and message in error["message"], (path, error)


# ----------------------------------------------------------------------------- paging

@pytest.mark.parametrize("rank", ["csd", "cosine"])
def test_pages_by_cursor_and_by_offset_make_up_the_whole_list(client, captions, rank):
    whole = [hit["id"] for hit in search(client, k=len(TEXTS), rank=rank)["results"]]
    seen, body = [], search(client, k=4, rank=rank)
    while True:
        assert body["offset"] == len(seen)
        seen += [hit["id"] for hit in body["results"]]
        if body["next_cursor"] is None:
            break
        body = search(client, k=4, rank=rank, cursor=body["next_cursor"])
    assert seen == whole
    assert [hit["id"] for hit in search(client, k=5, offset=6, rank=rank)["results"]] == whole[6:11]
    assert search(client, k=5, offset=len(TEXTS))["results"] == []


def test_cursors_belong_to_their_search_and_pages_end_by_max_k(make_client):
    client = make_client(max_k=6)
    client.post("/v1/collections/captions/items", json={"items": [{"text": t} for t in TEXTS]})
    first = search(client, k=4)
    assert first["next_cursor"]
    other = client.post("/v1/search/text", json={"query": "a dog", "collection": "captions", "k": 4,
                                                 "cursor": first["next_cursor"]})
    assert other.status_code == 422 and "belongs to another search" in other.json()["error"]["message"]
    garbage = client.post("/v1/search/text", json={"query": "a red circle", "collection": "captions", "k": 4,
                                                   "cursor": "bm90IGEgY3Vyc29y"})
    assert garbage.status_code == 422 and "not a cursor this service issued" in garbage.json()["error"]["message"]
    second = search(client, k=4, cursor=first["next_cursor"])  # shortened to end at max_k
    assert second["offset"] == 4 and len(second["results"]) == 2 and second["next_cursor"] is None
    too_far = client.post("/v1/search/text", json={"query": "a red circle", "collection": "captions", "k": 4,
                                                   "offset": 3})
    assert too_far.status_code == 422 and "offset + k must be at most max_k (6)" in too_far.json()["error"]["message"]


# ----------------------------------------------------------------------------- duplicates

def test_near_identical_items_collapse_into_the_best_ranked_one(make_client):
    client = make_client()
    copies = [("files", (f"{i}.png", png_bytes(3), "image/png")) for i in range(3)]  # three copies of one image
    others = [("files", (f"o{s}.png", png_bytes(s), "image/png")) for s in (10, 11, 12, 13)]
    ids = ["copy-0", "copy-1", "copy-2", "o10", "o11", "o12", "o13"]
    assert client.post("/v1/collections/dups/items", files=copies + others, data={"ids": ids}).status_code == 200
    query = {"file": ("q.png", png_bytes(3), "image/png")}
    plain = client.post("/v1/search/image", files=query, data={"collection": "dups", "k": 4}).json()
    assert [h["id"] for h in plain["results"]][:3] == ["copy-0", "copy-1", "copy-2"]  # equal scores: by id
    assert plain["collapsed"] == 0 and all(h["duplicates"] == [] for h in plain["results"])
    # the reference model is untrained: distinct noise images have means at cosine 0.97-0.99, copies at 1
    folded = client.post("/v1/search/image", files=query, data={"collection": "dups", "k": 4,
                                                                "collapse_duplicates": "true",
                                                                "duplicate_threshold": "0.995"}).json()
    assert folded["results"][0]["id"] == "copy-0" and folded["results"][0]["duplicates"] == ["copy-1", "copy-2"]
    assert folded["collapsed"] == 2 and len(folded["results"]) == 4  # filled from further down
    assert {h["id"] for h in folded["results"][1:]} <= {"o10", "o11", "o12", "o13"}
    # a lower threshold folds more: at 0.5 every item is a near-duplicate of the best one
    everything = client.post("/v1/search/image", files=query, data={"collection": "dups", "k": 4,
                                                                    "collapse_duplicates": "true",
                                                                    "duplicate_threshold": "0.5"}).json()
    assert [h["id"] for h in everything["results"]] == ["copy-0"] and everything["collapsed"] == 6
    assert everything["next_cursor"] is None


# ----------------------------------------------------------------------------- more like this, embeddings, URLs

def test_search_by_an_indexed_item_uses_its_stored_gaussian(client, captions):
    by_text = search(client, k=6)
    own = client.post("/v1/search/item", json={"collection": "captions", "item_id": "c00", "k": 5}).json()
    assert "c00" not in [h["id"] for h in own["results"]]  # itself left out by default
    assert [h["id"] for h in own["results"]] == [h["id"] for h in by_text["results"] if h["id"] != "c00"][:5]
    assert own["query"]["uncertainty"] == pytest.approx(by_text["query"]["uncertainty"], rel=1e-4)
    with_self = client.post("/v1/search/item", json={"collection": "captions", "item_id": "c00", "k": 1,
                                                     "rank": "cosine", "exclude_self": False}).json()
    assert with_self["results"][0]["id"] == "c00" and with_self["results"][0]["cosine"] == pytest.approx(1, abs=1e-5)
    missing = client.post("/v1/search/item", json={"collection": "captions", "item_id": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_item"


def test_cross_modal_search_by_item_equals_searching_with_the_same_image(client, captions):
    upload = client.post("/v1/search/image", files={"file": ("q.png", png_bytes(2), "image/png")},
                         data={"collection": "captions", "k": 5}).json()
    by_item = client.post("/v1/search/item", json={"collection": "captions", "item_collection": "images",
                                                   "item_id": "img-2", "k": 5}).json()
    assert [h["id"] for h in by_item["results"]] == [h["id"] for h in upload["results"]]
    np.testing.assert_allclose([h["csd"] for h in by_item["results"]], [h["csd"] for h in upload["results"]],
                               atol=1e-4)
    assert by_item["query"]["reference"] == upload["query"]["reference"]  # ranked among images, not captions


def test_search_by_raw_embedding_equals_the_text_search(client, captions):
    embedded = client.post("/v1/embed/text", json={"texts": ["a red circle"]}).json()["items"][0]
    body = {"collection": "captions", "k": 5, "mean": embedded["mean"], "logvar": embedded["logvar"],
            "modality": "text"}
    by_embedding = client.post("/v1/search/embedding", json=body)
    assert by_embedding.status_code == 200, by_embedding.text
    by_text = search(client, k=5)
    assert [h["id"] for h in by_embedding.json()["results"]] == [h["id"] for h in by_text["results"]]
    np.testing.assert_allclose([h["csd"] for h in by_embedding.json()["results"]],
                               [h["csd"] for h in by_text["results"]], atol=1e-5)
    dim = len(embedded["mean"])
    cases = [({"mean": embedded["mean"][:-1]}, 422, f"the collection's dimension {dim}"),
             ({"mean": [2 * x for x in embedded["mean"]]}, 422, "L2-normalised"),
             ({"logvar": [100.0] * dim}, 422, "overflow"),
             ({"model_id": "another-model"}, 409, "not comparable")]
    for change, status, message in cases:
        response = client.post("/v1/search/embedding", json={**body, **change})
        assert response.status_code == status and message in response.json()["error"]["message"], response.text
    not_finite = client.post("/v1/search/embedding", content=(
        '{"collection": "captions", "mean": [NaN' + ", 0" * (dim - 1) + '], "logvar": [0' + ", 0" * (dim - 1) + "]}"),
        headers={"content-type": "application/json"})
    assert not_finite.status_code == 422


@pytest.fixture
def image_server():
    """A plain HTTP server on loopback serving /scene.png, /big.png and 404 elsewhere."""
    images = {"/scene.png": png_bytes(4), "/big.png": png_bytes(5, size=(400, 400))}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = images.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", images
    server.shutdown()
    server.server_close()


def test_search_by_url_goes_through_the_jobs_ssrf_guarded_fetcher(client, make_client, image_server):
    base, images = image_server
    refused = client.post("/v1/search/url", json={"collection": "images", "url": f"{base}/scene.png"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "fetch_failed"
    assert "non-public address (127.0.0.1)" in refused.json()["error"]["message"]

    trusted = make_client(allow_private_urls=True, max_upload_bytes=len(images["/scene.png"]) + 100)
    add_images(trusted)
    by_url = trusted.post("/v1/search/url", json={"collection": "images", "url": f"{base}/scene.png", "k": 4})
    assert by_url.status_code == 200, by_url.text
    upload = trusted.post("/v1/search/image", files={"file": ("s.png", images["/scene.png"], "image/png")},
                          data={"collection": "images", "k": 4}).json()
    assert [h["id"] for h in by_url.json()["results"]] == [h["id"] for h in upload["results"]]
    for path, reason in (("/missing.png", "HTTP 404"), ("/big.png", "exceeds the cap")):
        failed = trusted.post("/v1/search/url", json={"collection": "images", "url": base + path})
        assert failed.status_code == 422 and reason in failed.json()["error"]["message"], failed.text


# ----------------------------------------------------------------------------- rank over a collection

def test_rank_the_items_of_a_collection_that_match_a_filter(client, captions):
    response = client.post("/v1/rank", data={"query": "a red circle", "collection": "captions",
                                             "filter": '{"field": "group", "eq": 0}'})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = {item["id"] for item in captions if item["metadata"]["group"] == 0}
    assert {r["id"] for r in results} == expected
    assert [r["csd"] for r in results] == sorted(r["csd"] for r in results)
    assert sum(r["class_probability"] for r in results) == pytest.approx(1.0)
    assert all(r["label"] == TEXTS[int(r["id"][1:])] for r in results)
    whole = client.post("/v1/rank", data={"query": "a red circle", "collection": "captions"}).json()["results"]
    assert len(whole) == len(TEXTS)
    both = client.post("/v1/rank", data={"query": "a dog", "collection": "captions", "candidates": ["a dog"]})
    assert both.status_code == 422
    lonely = client.post("/v1/rank", data={"query": "a dog", "candidates": ["a dog"], "filter": "{}"})
    assert lonely.status_code == 422


def test_rank_refuses_more_items_than_max_k(make_client):
    client = make_client(max_k=5)
    client.post("/v1/collections/captions/items", json={"items": [{"text": t} for t in TEXTS]})
    response = client.post("/v1/rank", data={"query": "a dog", "collection": "captions"})
    assert response.status_code == 422 and "at most 5 can be taken" in response.json()["error"]["message"]


# ----------------------------------------------------------------------------- the published document

def test_openapi_publishes_the_filter_schema_and_the_new_routes(client):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for path in ("/v1/search/item", "/v1/search/embedding", "/v1/search/url"):
        assert "post" in schema["paths"][path], path
    for name in ("Filter", "FilterLevel2", "FilterLevel1", "FilterCondition", "FilterField"):
        assert name in components, name
    text = components["TextSearchRequest"]["properties"]
    assert {"$ref": "#/components/schemas/Filter"} in text["filter"]["anyOf"]
    assert {"offset", "cursor", "collapse_duplicates", "duplicate_threshold"} <= set(text)
    image_form = schema["paths"]["/v1/search/image"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert image_form["encoding"]["filter"] == {"contentType": "application/json"}
    form = components[image_form["schema"]["$ref"].rsplit("/", 1)[1]]
    assert form["properties"]["filter"]["$ref"] == "#/components/schemas/Filter"
    hit = components["SearchHit"]["properties"]
    for name in ("csd", "cosine", "probability", "uncertainty"):
        assert any(word in hit[name]["description"] for word in ("lower", "higher")), name


# ----------------------------------------------------------------------------- the Python client

def test_the_python_client_filters_pages_and_finds_similar_items(server):
    """prolip_retrieval against a real server: filters (a JSON part in the image form), cursors, items, embeddings."""
    from prolip_retrieval import ApiError, Client

    with Client(server.url) as api:
        where = {"field": "n", "range": {"lt": 4}}  # the session server's captions carry {"n": i}
        first = api.search_text("a red circle", "captions", k=2, filter=where, rank="cosine")
        rest = api.search_text("a red circle", "captions", k=5, filter=where, rank="cosine",
                               cursor=first["next_cursor"])
        assert first["matched"] == 4 and rest["offset"] == 2 and rest["next_cursor"] is None
        assert sorted(h["metadata"]["n"] for h in first["results"] + rest["results"]) == [0, 1, 2, 3]
        by_image = api.search_image(png_bytes(2), "captions", k=3, filter={"field": "n", "in": [5, 6]})
        assert {h["metadata"]["n"] for h in by_image["results"]} == {5, 6}
        similar = api.search_item("images", "img-2", k=3, collapse_duplicates=True, duplicate_threshold=0.999)
        assert "img-2" not in [h["id"] for h in similar["results"]] and similar["collapsed"] >= 0
        embedded = api.embed_text(["a photo of a dog"])["items"][0]
        by_embedding = api.search_embedding(embedded["mean"], embedded["logvar"], "captions", k=2, rank="cosine")
        assert by_embedding["results"][0]["metadata"]["text"] == "a photo of a dog"
        with pytest.raises(ApiError) as refused:
            api.search_url("http://127.0.0.1:9/x.png", "images")
        assert refused.value.status == 422 and refused.value.code == "fetch_failed"
