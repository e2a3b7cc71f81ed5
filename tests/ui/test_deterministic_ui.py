"""A deterministic CLIP model in a real browser: no uncertainty bars, a note saying why, no inclusion ranking."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import CLIP_REFERENCE, write_wordlevel_tokenizer
from tests.ui.conftest import DEMO_WORDS, screenshot, serve
from tests.ui.helpers import IMAGE_COLLECTION, TEXT_COLLECTION, api_search_ids, card_ids

expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's server runs a small open_clip-layout CLIP checkpoint on a fresh data dir."""
    tmp = tmp_path_factory.mktemp("ui-clip")
    folder = tmp / "clip"
    shutil.copytree(CLIP_REFERENCE / "siglip-like", folder)
    write_wordlevel_tokenizer(folder / "tokenizer.json", DEMO_WORDS)
    yield from serve(tmp, str(folder))


def test_search_hides_uncertainty_and_says_why(page, server):
    page.goto("/")
    inclusion = page.get_by_role("radio", name="Inclusion")
    expect(inclusion).to_be_disabled()  # the demo images are points: no inclusion test
    # this random-weight CLIP puts every image at about the same point: folded as near-duplicates, they would
    # make one card, so this test shows them all
    page.get_by_label("Hide near-duplicates").uncheck()
    page.get_by_label("Describe what you are looking for").fill("a red circle")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".result-card")).to_have_count(12)
    assert card_ids(page) == api_search_ids(server, "a red circle", IMAGE_COLLECTION, 12, "csd", collapse=False)
    note = page.locator(".query-summary .no-uncertainty")
    expect(note).to_contain_text("deterministic")
    expect(note).to_contain_text("ranks exactly as cosine")
    expect(page.locator(".uncertainty [role=meter]")).to_have_count(0)  # no bars, in the summary or the cards
    expect(page.locator(".result-card .no-uncertainty")).to_have_count(12)
    expect(page.locator(".result-card .probability [role=meter]")).to_have_count(12)
    expect(page.locator(".result-card").get_by_role("link", name="Traverse")).to_have_count(0)  # needs variances
    screenshot(page, "search-deterministic")


def test_collection_pages_name_the_family_and_show_no_histogram(page, server):
    page.goto("/#/collections")
    row = page.locator("tr", has=page.get_by_role("link", name=TEXT_COLLECTION))
    expect(row).to_contain_text("clip (no uncertainty)")
    page.get_by_role("link", name=TEXT_COLLECTION).click()
    expect(page.locator(".view-collection .no-uncertainty")).to_contain_text("deterministic")
    expect(page.locator(".view-collection .histogram, .view-collection .extreme")).to_have_count(0)


def test_item_view_of_a_point_says_it_has_no_uncertainty(page, server):
    with server.api() as client:
        item_id = client.post("/v1/search/text", json={"query": "a red circle", "collection": IMAGE_COLLECTION,
                                                       "k": 1}).json()["results"][0]["id"]
    page.goto(f"/#/item?c={IMAGE_COLLECTION}&id={item_id}")
    expect(page.locator(".item-facts .no-uncertainty")).to_contain_text("deterministic")
    expect(page.locator(".item-facts [role=meter]")).to_have_count(0)
    expect(page.locator(".item-facts").get_by_role("link", name="Traverse")).to_have_count(0)  # needs variances
    expect(page.locator(".neighbours .result-card").first).to_be_visible()
