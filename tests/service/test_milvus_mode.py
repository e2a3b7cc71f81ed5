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
