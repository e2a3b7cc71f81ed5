"""Uploaded images: decoded one at a time to the model's input, within per-request and per-process budgets."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.images import DecodeBudget

from .conftest import png_bytes


def test_prepared_images_encode_exactly_as_the_encoder_does(client, encoder):
    uploads = [png_bytes(seed, size=(40 + seed, 30)) for seed in range(3)]
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(uploads)]
    body = client.post("/v1/embed/image", files=files).json()
    expected = encoder.encode_images(uploads)
    np.testing.assert_allclose([item["mean"] for item in body["items"]], expected.mean, atol=1e-6)
    np.testing.assert_allclose([item["logvar"] for item in body["items"]], expected.logvar, atol=1e-6)
    ranked = client.post("/v1/rank", data={"rank": "cosine"}, files=[("file", ("q.png", uploads[1], "image/png"))]
                         + [("candidate_files", (f"{i}.png", data, "image/png")) for i, data in enumerate(uploads)])
    assert ranked.status_code == 200, ranked.text
    best = ranked.json()["results"][0]
    assert best["label"] == "1.png" and best["cosine"] == pytest.approx(1.0, abs=1e-5)  # the query's own copy


def test_a_request_whose_images_hold_too_many_pixels_together_is_refused(make_client):
    client = make_client(max_image_pixels=50 * 50, max_request_pixels=3 * 40 * 40, max_decoding_pixels=100_000)
    one = png_bytes(1, size=(40, 40))
    ok = client.post("/v1/embed/image", files=[("files", (f"{i}.png", one, "image/png")) for i in range(3)])
    assert ok.status_code == 200, ok.text
    refused = client.post("/v1/embed/image", files=[("files", (f"{i}.png", one, "image/png")) for i in range(4)])
    assert refused.status_code == 413, refused.text
    assert "6400 pixels together" in refused.json()["error"]["message"]
    too_big = client.post("/v1/embed/image", files={"files": ("big.png", png_bytes(2, size=(60, 60)), "image/png")})
    assert too_big.status_code == 422 and "exceeds the limit of 2500 pixels" in too_big.json()["error"]["message"]


def test_the_decoding_budget_cannot_be_smaller_than_one_image():
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="max_decoding_pixels must be at least max_image_pixels"):
        Settings(max_image_pixels=1000, max_decoding_pixels=999)


def test_decode_budget_grants_in_order_never_over_capacity_and_times_out():
    async def scenario():
        budget = DecodeBudget(10)
        await budget.acquire(6, 1)
        order = []

        async def take(name: str, charge: int, timeout: float = 5):
            await budget.acquire(charge, timeout)
            order.append(name)
            assert budget.used <= budget.capacity

        big = asyncio.create_task(take("big", 8))
        await asyncio.sleep(0.01)
        small = asyncio.create_task(take("small", 2))  # would fit now, but waits behind the older request
        await asyncio.sleep(0.01)
        assert order == [] and budget.used == 6
        with pytest.raises(TimeoutError):
            await budget.acquire(3, 0.05)  # gives up; leaves no trace in the queue
        budget.release(6)
        await asyncio.gather(big, small)
        assert order == ["big", "small"] and budget.used == 10
        budget.release(8)
        budget.release(2)
        # a waiter cancelled (its client left) does not block the ones behind it
        await budget.acquire(9, 1)
        gone = asyncio.create_task(budget.acquire(5, 5))
        await asyncio.sleep(0.01)
        behind = asyncio.create_task(take("behind", 1))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.wait_for(behind, 1)
        assert budget.used == 10 and len(budget._waiting) == 0

    asyncio.run(scenario())


def test_a_request_that_waits_too_long_for_room_gets_429(make_client):
    from concurrent.futures import ThreadPoolExecutor

    client = make_client(decode_wait_s=0.05, max_decoding_pixels=40_000_000)
    state = client.app.state.service
    # hold the whole budget, as long-running decodes of other requests would
    state.images.budget.used = state.images.budget.capacity
    try:
        with ThreadPoolExecutor(1) as pool:
            response = pool.submit(client.post, "/v1/embed/image",
                                   files={"files": ("a.png", png_bytes(1), "image/png")}).result(30)
    finally:
        state.images.budget.used = 0
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == "2" and response.json()["error"]["code"] == "queue_full"
    assert client.post("/v1/embed/image", files={"files": ("a.png", png_bytes(1), "image/png")}).status_code == 200
