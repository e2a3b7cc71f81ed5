"""A real uvicorn server on loopback: concurrency is batched, shutdown is clean."""

from __future__ import annotations

import asyncio
import signal

import httpx

from .conftest import CAPTIONS, Server, add_captions


def test_concurrent_queries_are_answered_and_batched(server):
    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            requests = [http.post("/v1/search/text", json={"query": text, "collection": "captions", "k": 3,
                                                           "rank": "cosine"})
                        for text in CAPTIONS * 4]
            return await asyncio.gather(*requests)

    responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    for text, response in zip(CAPTIONS * 4, responses, strict=True):
        assert response.json()["results"][0]["metadata"]["text"] == text  # each got its own answer
    metrics = httpx.get(server.url + "/metrics").text
    sizes = {}
    for line in metrics.splitlines():
        if line.startswith('prolip_batch_size_sum{queue="text"}'):
            sizes["sum"] = float(line.split()[-1])
        if line.startswith('prolip_batch_size_count{queue="text"}'):
            sizes["count"] = float(line.split()[-1])
    assert sizes["sum"] / sizes["count"] > 1.0  # some calls carried several queries


def test_sigterm_shuts_down_cleanly_and_data_survives_a_restart(tmp_path, model_dir):
    data_dir = tmp_path / "data"
    first = Server(data_dir, model_dir)
    first.wait_ready()
    with httpx.Client(base_url=first.url, timeout=30) as http:
        add_captions(http)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it
    assert first.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in first.log.read_text()
    second = Server(data_dir, model_dir)
    try:
        second.wait_ready(path="/readyz")
        body = httpx.post(second.url + "/v1/search/text",
                          json={"query": "a dog", "collection": "captions", "k": 100}).json()
        assert sorted(r["metadata"]["text"] for r in body["results"]) == sorted(CAPTIONS)
    finally:
        second.stop()
