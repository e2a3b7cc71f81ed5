"""The search page in a real browser against a real server: text -> images, image -> texts by upload
and by drag-and-drop, rank modes that re-order results, and keyboard use."""

from __future__ import annotations

import base64
import re

import pytest

from tests.ui.conftest import screenshot
from tests.ui.helpers import (
    IMAGE_COLLECTION,
    TEXT_COLLECTION,
    api_search_ids,
    card_ids,
    scene_png,
    unlabelled_controls,
)

expect = pytest.importorskip("playwright.sync_api").expect

QUERY = "a large red circle on the left"
K = 12


def search_text(page, query: str = QUERY) -> None:
    page.goto("/")
    page.get_by_label("Describe what you are looking for").fill(query)
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".result-card")).to_have_count(K)


def test_text_search_shows_the_ranked_images_with_uncertainty(page, server):
    search_text(page)
    # the grid is the API's ranking, image by image
    assert card_ids(page) == api_search_ids(server, QUERY, IMAGE_COLLECTION, K, "csd")
    page.wait_for_function("""() => [...document.querySelectorAll('.result-card img')]
        .every(img => img.complete && img.naturalWidth > 0)""")
    # the query's uncertainty: a bar filled to its percentile among texts (the caption collection)
    with server.api() as client:
        answer = client.post("/v1/search/text", json={"query": QUERY, "collection": IMAGE_COLLECTION, "k": K}).json()
        among_texts = client.post("/v1/uncertainty/text", json={"texts": [QUERY]}).json()
    assert among_texts["collection"] == TEXT_COLLECTION
    meter = page.locator(".query-summary [role=meter]")
    expect(meter).to_have_attribute("aria-valuenow", str(round(among_texts["items"][0]["percentile"])))
    expect(meter).to_have_attribute("aria-valuetext", re.compile(rf"percentile of {TEXT_COLLECTION}"))
    # each result: its own uncertainty and its match probability, as the API computed them
    first = page.locator(".result-card").first
    expect(first.locator(".probability [role=meter]")).to_have_attribute(
        "aria-valuenow", str(round(answer["results"][0]["probability"] * 100)))
    expect(first.locator(".uncertainty .unc-value")).to_have_text(re.compile(r"\d"))
    assert page.url.endswith("rank=csd") and "q=a+large+red+circle" in page.url
    screenshot(page, "search-text")


def test_rank_modes_reorder_the_results_and_show_the_movement(page, server):
    search_text(page)
    orders = {"csd": card_ids(page)}
    for mode, label in (("cosine", "Cosine"), ("inclusion", "Inclusion")):
        page.get_by_text(label, exact=True).click()  # the visible label of the radio button
        expect(page).to_have_url(re.compile(rf"rank={mode}"))
        expect(page.locator(".result-status")).to_contain_text(f"ranked by {label}")
        orders[mode] = card_ids(page)
        assert orders[mode] == api_search_ids(server, QUERY, IMAGE_COLLECTION, K, mode)
    # the modes disagree, and the cards say who moved where
    assert orders["csd"] != orders["cosine"] or orders["cosine"] != orders["inclusion"]
    moved = page.locator(".move.up, .move.down, .move.new")
    if orders["inclusion"] != orders["cosine"]:
        assert moved.count() > 0
    screenshot(page, "search-rank-inclusion")


def test_image_upload_finds_captions(page, server, tmp_path):
    query = tmp_path / "query.png"
    query.write_bytes(scene_png())
    page.goto("/")
    page.get_by_role("link", name="Image query").click()
    expect(page).to_have_url(re.compile(r"mode=image"))
    page.locator("input[type=file]").set_input_files(str(query))
    cards = page.locator(".result-card")
    expect(cards).to_have_count(K)
    expect(page.locator("#main select")).to_have_value(TEXT_COLLECTION)
    with server.api() as client:
        answer = client.post("/v1/search/image", files={"file": ("query.png", query.read_bytes(), "image/png")},
                             data={"collection": TEXT_COLLECTION, "k": str(K), "rank": "csd",
                                   "collapse_duplicates": "true"}).json()
    assert card_ids(page) == [hit["id"] for hit in answer["results"]]
    expect(cards.first.locator(".item-text")).to_have_text(answer["results"][0]["metadata"]["text"])
    expect(page.locator(".picker img.preview")).to_be_visible()
    screenshot(page, "search-image")


def test_dropping_an_image_searches_with_it(page):
    page.goto("/#/search?mode=image")
    encoded = base64.b64encode(scene_png(index=3)).decode()
    page.evaluate("""(encoded) => {
        const bytes = Uint8Array.from(atob(encoded), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        document.querySelector('.dropzone').dispatchEvent(
            new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", encoded)
    expect(page.locator(".result-card")).to_have_count(K)
    expect(page.locator(".query-summary h2")).to_contain_text("dropped.png")


def test_a_file_that_is_not_an_image_gives_a_readable_error(page, tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("these are not pixels")
    page.goto("/#/search?mode=image")
    page.locator("input[type=file]").set_input_files(str(bogus))
    error = page.locator(".result-status .inline-error")
    expect(error).to_be_visible()
    assert len(error.inner_text().strip()) > 15  # a sentence, not a status code
    # the page stays usable: a real image still searches
    good = tmp_path / "good.png"
    good.write_bytes(scene_png())
    page.locator("input[type=file]").set_input_files(str(good))
    expect(page.locator(".result-card")).to_have_count(K)


def test_search_works_from_the_keyboard(page):
    page.goto("/")
    # the page opens with the caret in the query box
    expect(page.get_by_label("Describe what you are looking for")).to_be_focused()
    page.keyboard.type("a blue square")
    page.keyboard.press("Enter")
    expect(page.locator(".result-card")).to_have_count(K)
    # Tab reaches the rank modes; arrow keys move through them, and each move re-ranks
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.name") == "rank":
            break
    expect(page.get_by_role("radio", name="CSD")).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(page).to_have_url(re.compile(r"rank=cosine"))
    expect(page.get_by_role("radio", name="Cosine")).to_be_checked()
    expect(page.locator(".result-status")).to_contain_text("ranked by Cosine")
    # every control can be named by assistive technology
    assert unlabelled_controls(page) == []


@pytest.mark.parametrize("page", [{"width": 390, "height": 844}], indirect=True)
def test_search_fits_a_phone(page):
    search_text(page, "a green triangle")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    # cards sit two to a row on a phone, not squeezed into one column or overflowing
    lefts = page.locator(".result-card").evaluate_all(
        "cards => cards.slice(0, 2).map(c => c.getBoundingClientRect().left)")
    assert lefts[1] > lefts[0]
    screenshot(page, "search-phone")


def test_a_general_query_with_min_probability_shows_its_true_matches(page, server):
    """"a circle" with P(match) >= 0.5, ranked by probability: the circles of the collection, and only them."""
    from models.demo_data import generate
    from tests.ui.conftest import DEMO_SCENES

    # dup=0: every match shown, none folded into a near-duplicate
    page.goto(f"/#/search?mode=text&q=a+circle&c={IMAGE_COLLECTION}&k=100&rank=probability&p=0.5&dup=0")
    expect(page.locator(".result-status")).to_contain_text("with P(match) ≥ 0.5, ranked by Probability")
    shown = set(card_ids(page))
    truth = {scene.id for scene in generate("test", DEMO_SCENES) if scene.matches("a circle")}
    assert truth and len(shown & truth) >= 0.9 * len(shown) and len(shown & truth) >= 0.9 * len(truth)
    meters = page.locator(".result-card .probability [role=meter]")
    assert all(int(value) >= 50 for value in meters.evaluate_all("ms => ms.map(m => m.ariaValueNow)"))
    expect(page.get_by_role("radio", name="Probability")).to_be_checked()
    # the raw pair probability is still shown, beside the calibrated one
    expect(page.locator(".result-card").first.locator("dt", has_text="pair")).to_be_visible()
    screenshot(page, "search-general-probability")


def test_the_mode_switch_names_what_the_chosen_collection_holds(page):
    """Issue #16, defect 15: the switch said "Text → images" while a text collection was searched."""
    page.goto(f"/#/search?mode=text&c={TEXT_COLLECTION}&q=a+red+circle")
    expect(page.locator(".result-card").first).to_be_visible()
    active = page.locator(".segmented a.segment.active")
    expect(active).to_have_text("Text → texts")
    expect(page.locator(".segmented a.segment").last).to_have_text("Image query")
    page.get_by_label("Collection", exact=True).select_option(IMAGE_COLLECTION)
    expect(active).to_have_text("Text → images")


def test_result_cards_name_their_files(page, server):
    """Issue #16, defect 15: result cards showed no filename."""
    search_text(page)
    with server.api() as client:
        hits = client.post("/v1/search/text", json={"query": QUERY, "collection": IMAGE_COLLECTION, "k": K,
                                                     "collapse_duplicates": True}).json()  # as the UI asks
    names = page.locator(".result-card .item-name").all_inner_texts()
    assert names == [hit["metadata"]["filename"] for hit in hits["results"]]
