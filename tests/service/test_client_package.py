"""The Python client (``prolip_retrieval``) against a real server: every route, errors, retries, async."""

from __future__ import annotations

import asyncio
import inspect
import time
import typing

import httpx
import pytest

import prolip_retrieval.types as types
from prolip_retrieval import ApiError, AsyncClient, Client, Retry
from prolip_retrieval.client import retry_after_seconds

from .conftest import CAPTIONS, png_bytes
from .test_openapi_client import _document

# operations the client reaches through other methods: the combined add (JSON or form) is
# add_text_items + add_image_items, which take one body type each
COVERED_ELSEWHERE = {"add_items": ("add_text_items", "add_image_items")}


def test_every_operation_has_a_method_and_every_answer_type_mirrors_the_document(tmp_path, model_dir):
    document = _document(tmp_path, model_dir)
    operations = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    for client_class in (Client, AsyncClient):
        for operation in operations:
            for name in COVERED_ELSEWHERE.get(operation, (operation,)):
                method = getattr(client_class, name, None)
                assert method is not None, f"{client_class.__name__} has no method for {operation}"
                assert inspect.iscoroutinefunction(method) == (client_class is AsyncClient), name
    components = document["components"]["schemas"]
    for name, cls in vars(types).items():
        if isinstance(cls, type) and typing.is_typeddict(cls) and name in components:
            assert set(typing.get_type_hints(cls)) == set(components[name]["properties"]), name
    for method in ("search_text", "get_item", "submit_job", "rank_candidates"):  # answers are typed
        assert typing.get_type_hints(getattr(Client, method))["return"] is not typing.Any


def test_the_client_drives_every_route_of_a_real_server(server, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(77))
    with Client(server.url) as api:
        assert api.healthz() == {"status": "ok"}
        assert api.readyz()["ready"] is True
        assert "prolip_request_duration_seconds" in api.metrics()

        found = api.search_text("a photo of a dog", "captions", k=3, rank="cosine")
        assert found["results"][0]["metadata"]["text"] == "a photo of a dog"
        assert found == httpx.post(server.url + "/v1/search/text", timeout=30, json={
            "query": "a photo of a dog", "collection": "captions", "k": 3, "rank": "cosine"}).json()
        by_image = api.search_image(png_bytes(3), "images", k=2, rank="cosine")
        assert by_image["results"][0]["id"] == "img-3"

        added = api.add_text_items("client-notes", ["a blue square", {"id": "n2", "text": "a red circle",
                                                                        "metadata": {"page": 3}}])
        assert added["created"] and added["size"] == 2 and added["ids"][1] == "n2"
        assert api.get_item("client-notes", "n2")["metadata"] == {"page": 3, "text": "a red circle"}
        added = api.add_image_items("client-photos", [photo, ("b.png", png_bytes(78))], ids=["p 1?#%", "p2"],
                                    metadata=[{"album": "x"}, {}])
        assert added["ids"] == ["p 1?#%", "p2"]
        item = api.get_item("client-photos", "p2")
        assert item["metadata"]["filename"] == "b.png"
        image = api.item_image("client-photos", "p2")
        assert image.data == png_bytes(78) and image.media_type == "image/png"
        assert api.get_collection("client-photos", extremes=1)["size"] == 2
        assert {"client-notes", "client-photos"} <= {c["name"] for c in api.list_collections()["collections"]}

        assert api.embed_text(["a dog"])["items"][0]["uncertainty"] > 0
        assert len(api.embed_image([photo])["items"][0]["mean"]) == api.embed_image([photo])["dim"]
        assert api.text_uncertainty(["a dog", "an object"], "captions")["collection"] == "captions"
        assert len(api.image_uncertainty([photo, png_bytes(1)])["items"]) == 2
        ranked = api.rank_candidates(query="a red circle", candidates=["a red circle", "a blue square"],
                                     rank="cosine")
        assert ranked["results"][0]["label"] == "a red circle"
        ranked = api.rank_candidates(image=photo, candidate_images=[png_bytes(77), png_bytes(5)], rank="cosine")
        assert ranked["results"][0]["index"] == 0
        assert api.rank_candidates(image=photo, candidates=["circle", "square"], templates=["a {}"])["results"]
        walk = api.traverse_image(photo, "captions", method="inclusion", k=3, min_probability=0.0)
        assert {step["text"] for step in walk["captions"]} <= set(CAPTIONS)

        assert api.delete_item("client-photos", "p 1?#%") == {"deleted": "p 1?#%"}
        with pytest.raises(ApiError) as missing:
            api.get_item("client-photos", "p 1?#%")
        assert (missing.value.status, missing.value.code) == (404, "unknown_item")
        assert api.drop_collection("client-notes") == {"deleted": "client-notes"}
        with pytest.raises(ApiError) as unknown:
            api.search_text("a dog", "client-notes")
        assert unknown.value.code == "unknown_collection" and "client-notes" in unknown.value.message

    with Client(server.url) as api:  # this server has no job roots: every source is outside them
        assert api.job_roots() == {"roots": []} and api.list_jobs() == {"jobs": [], "warnings": []}
        with pytest.raises(ApiError) as refused:
            api.submit_job(str(tmp_path), "x")
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
        for call in (api.get_job, api.cancel_job):
            with pytest.raises(ApiError) as unknown_job:
                call("no-such-job")
            assert unknown_job.value.status == 404 and unknown_job.value.code


def test_jobs_through_the_client(make_client, tmp_path):
    root = tmp_path / "corpora"
    (root / "photos").mkdir(parents=True)
    for i in range(3):
        (root / "photos" / f"p{i}.png").write_bytes(png_bytes(i))
    api = Client(http=make_client(job_roots=str(root)))
    assert api.job_roots()["roots"] == [str(root.resolve())]
    job = api.wait_job(api.submit_job(str(root / "photos"), "photos", sync=True)["id"], timeout=60, poll_s=0.05)
    assert (job["state"], job["done"], job["sync"]) == ("completed", 3, True)
    assert [j["id"] for j in api.list_jobs()["jobs"]] == [job["id"]]
    assert api.cancel_job(job["id"])["state"] == "completed"


def test_429_is_retried_after_the_servers_retry_after(make_client):
    http = make_client(rate_limit_per_minute=60, rate_limit_burst=1)  # the real rate limiter: 1 request/s
    patient = Client(http=http, retry=Retry(attempts=3))
    impatient = Client(http=http, retry=Retry(attempts=1))
    patient.list_collections()
    with pytest.raises(ApiError) as limited:
        impatient.list_collections()
    assert (limited.value.status, limited.value.code, limited.value.retry_after) == (429, "rate_limited", 1.0)
    started = time.monotonic()
    assert patient.list_collections() == {"collections": [], "broken": []}  # waited for Retry-After, then succeeded
    assert time.monotonic() - started >= 0.9


def test_retry_after_and_backoff_rules():
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now
    assert retry_after_seconds("soon") is None
    policy = Retry(backoff_s=0.5, max_backoff_s=3.0, max_wait_s=10.0)
    assert [policy.delay(a, None) for a in range(4)] == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(0, 120.0) == 10.0


def test_the_async_client_runs_requests_concurrently(server):
    async def main():
        async with AsyncClient(server.url) as api:
            answers = await asyncio.gather(*[api.search_text(text, "captions", k=1, rank="cosine")
                                             for text in CAPTIONS])
            image = await api.item_image("images", "img-2")
            with pytest.raises(ApiError) as error:
                await api.get_collection("nowhere")
            return answers, image, error.value

    answers, image, error = asyncio.run(main())
    assert [a["results"][0]["metadata"]["text"] for a in answers] == CAPTIONS
    assert image.data == png_bytes(2) and error.code == "unknown_collection"
