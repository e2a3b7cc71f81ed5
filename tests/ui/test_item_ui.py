"""The item view, "find similar", folded near-duplicates and more results, in a real browser against a real
server; every list the page shows is compared with the API's answer to the same question."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import screenshot
from tests.ui.helpers import IMAGE_COLLECTION, TEXT_COLLECTION, card_ids, no_horizontal_overflow, unlabelled_controls

expect = pytest.importorskip("playwright.sync_api").expect

QUERY = "a small blue triangle"
DUP_QUERY = "a large red circle on the left"  # near-identical scenes among its first results


def api_item_search(server, item_collection: str, item_id: str, collection: str, k: int, collapse: bool,
                    rank: str = "csd") -> dict:
    with server.api() as client:
        response = client.post("/v1/search/item", json={
            "item_collection": item_collection, "item_id": item_id, "collection": collection, "k": k,
            "rank": rank, "collapse_duplicates": collapse})
    response.raise_for_status()
    return response.json()


def test_item_view_from_a_search_result_and_find_similar(page, server):
    page.goto(f"/#/search?q={QUERY.replace(' ', '+')}")
    first = page.locator(".result-card").first
    expect(first).to_be_visible()
    item_id = first.get_attribute("data-id")
    first.locator("a.item-link").click()
    expect(page).to_have_url(re.compile(rf"#/item\?c={IMAGE_COLLECTION}&id={item_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(item_id)
    with server.api() as client:
        item = client.get(f"/v1/collections/{IMAGE_COLLECTION}/items/{item_id}").json()
    # full size: the stored image, drawn far larger than a result thumbnail
    image = page.locator("img.full-image")
    page.wait_for_function("() => { const i = document.querySelector('img.full-image'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    assert image.evaluate("i => i.getBoundingClientRect().width") > 200
    # its metadata and its uncertainty, as the API has them
    keys = page.locator(".metadata-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.key)")
    assert keys == list(item["metadata"])
    meter = page.locator(".item-facts [role=meter]")
    expect(meter).to_have_attribute("aria-valuenow", str(round(item["percentile"])))
    # the captions most probably true of it (the demo model has a calibrator), and its nearest images
    # (near-duplicates folded)
    captions = api_item_search(server, IMAGE_COLLECTION, item_id, TEXT_COLLECTION, 8, False, "probability")
    rows = page.locator(".matches .match")
    expect(rows).to_have_count(len(captions["results"]))
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.id)") == [hit["id"] for hit in captions["results"]]
    expect(rows.first.locator(".match-text")).to_have_text(captions["results"][0]["metadata"]["text"])
    expect(page.locator(".matches .hint")).to_contain_text("calibrated probability")
    similar = api_item_search(server, IMAGE_COLLECTION, item_id, IMAGE_COLLECTION, 6, True)
    neighbours = page.locator(".neighbours .result-card")
    expect(neighbours).to_have_count(len(similar["results"]))
    assert item_id not in [hit["id"] for hit in similar["results"]]
    assert unlabelled_controls(page) == []
    screenshot(page, "item")
    # it lives in the URL: a reload shows it again
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text(item_id)
    # find similar: the search page with the item's stored Gaussian as the query
    page.get_by_role("link", name="Find similar").click()
    expect(page).to_have_url(re.compile(rf"mode=item&from={IMAGE_COLLECTION}&id={item_id}"))
    expect(page.locator(".result-card")).to_have_count(12)
    assert card_ids(page) == [hit["id"] for hit in
                              api_item_search(server, IMAGE_COLLECTION, item_id, IMAGE_COLLECTION, 12, True)["results"]]
    expect(page.locator(".query-summary h2")).to_contain_text(item_id)
    page.go_back()
    expect(page).to_have_url(re.compile(r"#/item\?"))
    expect(page.get_by_role("heading", level=1)).to_have_text(item_id)


def test_a_caption_opens_from_the_collection_page_with_the_images_it_describes(page, server):
    page.goto(f"/#/collections/{TEXT_COLLECTION}")
    first = page.locator(".extreme.certain a.item-link").first
    expect(first).to_be_visible()
    first.click()
    expect(page).to_have_url(re.compile(rf"#/item\?c={TEXT_COLLECTION}&id="))
    item_id = page.url.split("id=", 1)[1]
    with server.api() as client:
        item = client.get(f"/v1/collections/{TEXT_COLLECTION}/items/{item_id}").json()
    expect(page.locator("blockquote.item-full-text")).to_have_text(item["metadata"]["text"])
    images = api_item_search(server, TEXT_COLLECTION, item_id, IMAGE_COLLECTION, 8, False, "probability")
    cards = page.locator(".matches .result-card")
    expect(cards).to_have_count(len(images["results"]))
    assert cards.evaluate_all("cs => cs.map(c => c.dataset.id)") == [hit["id"] for hit in images["results"]]
    expect(page.locator(".item-facts").get_by_role("link", name="Traverse")).to_have_count(0)  # no image to traverse


def test_near_duplicates_fold_by_default_and_more_results_page_on(page, server):
    with server.api() as client:
        def api(**extra):
            return client.post("/v1/search/text", json={"query": DUP_QUERY, "collection": IMAGE_COLLECTION,
                                                        "k": 12, **extra}).json()

        folded, plain = api(collapse_duplicates=True), api()
        second = api(collapse_duplicates=True, cursor=folded["next_cursor"])
    assert folded["collapsed"] > 0, "the demo collection has near-identical scenes for this query"
    page.goto(f"/#/search?q={DUP_QUERY.replace(' ', '+')}")
    expect(page.locator(".result-card")).to_have_count(12)
    assert card_ids(page) == [hit["id"] for hit in folded["results"]]
    expect(page.locator(".result-status")).to_contain_text(f"{folded['collapsed']} near-duplicate")
    expect(page.locator(".result-card .duplicates").first).to_contain_text("similar hidden")
    # the next page is appended, numbered on
    page.get_by_role("button", name="More results").click()
    expect(page.locator(".result-card")).to_have_count(12 + len(second["results"]))
    assert card_ids(page)[12:] == [hit["id"] for hit in second["results"]]
    expect(page.locator(".result-card").nth(12).locator(".rank-badge")).to_have_text("#13")
    # switched off: every result, and the URL says so
    page.get_by_label("Hide near-duplicates").uncheck()
    expect(page).to_have_url(re.compile(r"dup=0"))
    expect(page.locator(".result-card")).to_have_count(12)
    expect(page.locator(".result-status")).to_contain_text("ranked by CSD.")
    expect(page.locator(".result-status")).not_to_contain_text("near-duplicate")
    assert card_ids(page) == [hit["id"] for hit in plain["results"]]


@pytest.mark.parametrize("page", [{"width": 390, "height": 844}], indirect=True)
def test_item_view_fits_a_phone_and_an_unknown_item_reads_as_a_message(page, server):
    with server.api() as client:
        item_id = client.post("/v1/search/text", json={"query": QUERY, "collection": IMAGE_COLLECTION,
                                                       "k": 1}).json()["results"][0]["id"]
    page.goto(f"/#/item?c={IMAGE_COLLECTION}&id={item_id}")
    expect(page.locator(".neighbours .result-card").first).to_be_visible()
    expect(page.locator(".matches .match").first).to_be_visible()
    assert no_horizontal_overflow(page)
    screenshot(page, "item-phone")
    page.goto(f"/#/item?c={IMAGE_COLLECTION}&id=no-such-item")
    expect(page.locator(".inline-error")).to_contain_text("no-such-item")
    expect(page.get_by_role("link", name="Back to the collections")).to_be_visible()
