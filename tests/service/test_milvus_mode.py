"""The service with PROLIP_MILVUS_URI (one replica, no Redis): the same API over a real Milvus Lite server."""

from __future__ import annotations

import pytest

from tests.processes import start_milvus_lite

from .conftest import CAPTIONS, add_captions


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    process, uri = start_milvus_lite(tmp_path_factory.mktemp("milvus"))
    yield uri
    process.terminate()
    process.wait(20)


def test_same_api_over_milvus_and_the_demo_is_built_once_per_deployment(make_client, milvus_uri, tmp_path):
    settings = dict(milvus_uri=milvus_uri, milvus_prefix="t_service", demo=True, demo_scenes=6)
    client = make_client(tmp_path / "data", **settings)
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/collections/demo-images").json()["size"] == 6
    add_captions(client)
    found = client.post("/v1/search/text", json={"query": "a red circle", "collection": "captions", "k": 3,
                                                 "rank": "cosine"}).json()
    assert found["results"][0]["metadata"]["text"] == "a red circle" and found["query"]["percentile"] is not None
    stats = client.get("/v1/collections/captions").json()
    assert stats["size"] == len(CAPTIONS) and stats["stats"]["store"] == "milvus"
    assert stats["stats"]["sample"] == {"exact": True, "size": len(CAPTIONS), "fraction": 1.0}
    assert len(stats["most_certain"]) == 5
    item_id = found["results"][0]["id"]
    assert client.get(f"/v1/collections/captions/items/{item_id}").status_code == 200
    assert client.delete(f"/v1/collections/captions/items/{item_id}").status_code == 200
    assert client.get(f"/v1/collections/captions/items/{item_id}").status_code == 404
    # a user's drop of a demo collection is final: a restart (even on a new data dir) does not rebuild it
    assert client.delete("/v1/collections/demo-images").status_code == 200
    client.__exit__(None, None, None)
    again = make_client(tmp_path / "data", **settings)
    assert again.get("/v1/collections/demo-images").status_code == 404
    assert again.get("/v1/collections/demo-captions").status_code == 200
    other = make_client(tmp_path / "fresh", **settings)  # a new replica data dir, the same Milvus catalog
    assert other.get("/v1/collections/demo-images").status_code == 404


def test_filters_pages_duplicates_and_more_like_this_over_milvus(make_client, milvus_uri, tmp_path):
    client = make_client(tmp_path / "data", milvus_uri=milvus_uri, milvus_prefix="t_search", demo=False)
    add_captions(client)  # metadata {"n": i}

    def search(**body):
        response = client.post("/v1/search/text", json={"query": "a red circle", "collection": "captions",
                                                        "rank": "cosine", **body})
        assert response.status_code == 200, response.text
        return response.json()

    where = {"field": "n", "range": {"gte": 2, "lt": 6}}
    first = search(k=3, filter=where)
    rest = search(k=3, filter=where, cursor=first["next_cursor"])
    assert first["matched"] == 4 and rest["next_cursor"] is None
    assert sorted(h["metadata"]["n"] for h in first["results"] + rest["results"]) == [2, 3, 4, 5]
    folded = search(k=3, collapse_duplicates=True, duplicate_threshold=0.5)  # every caption folds into one
    assert len(folded["results"]) == 1 and folded["collapsed"] == len(CAPTIONS) - 1
    item_id = search(k=1)["results"][0]["id"]
    similar = client.post("/v1/search/item", json={"collection": "captions", "item_id": item_id, "k": 3}).json()
    assert len(similar["results"]) == 3 and item_id not in [h["id"] for h in similar["results"]]
