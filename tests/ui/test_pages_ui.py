"""Traversal, collection pages, indexing jobs and error messages, in a real browser against a real server."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import JOB_IMAGES, screenshot
from tests.ui.helpers import IMAGE_COLLECTION, TEXT_COLLECTION, no_horizontal_overflow, unlabelled_controls

expect = pytest.importorskip("playwright.sync_api").expect

ALL_THUMBNAILS_LOADED = "() => [...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)"


def test_traversal_from_a_search_result_lists_captions_specific_to_inclusive(page, server):
    page.goto("/#/search?q=a+small+blue+triangle")
    cards = page.locator(".result-card")
    expect(cards.first).to_be_visible()
    item_id = cards.first.get_attribute("data-id")
    cards.first.get_by_role("link", name="Traverse").click()
    expect(page).to_have_url(re.compile(rf"#/traverse\?from={IMAGE_COLLECTION}&id="))
    rows = page.locator(".traversal-table tbody tr")
    expect(rows.first).to_be_visible()
    # the same image through the API gives the same captions in the same order
    with server.api() as client:
        image = client.get(f"/v1/collections/{IMAGE_COLLECTION}/items/{item_id}/image").content
        answer = client.post("/v1/traverse/image", files={"file": ("scene.png", image, "image/png")},
                             data={"collection": TEXT_COLLECTION}).json()
    expected = [step["text"] for step in answer["captions"]]
    assert expected, "the traversal of an indexed scene should include at least one caption"
    assert rows.locator(".caption-cell").all_inner_texts() == expected
    # steps are numbered 1..n; the two ends also say what they are (issue #16: "specific, 2, 3, inclusive")
    assert rows.locator(".step-number").all_inner_texts() == [str(i + 1) for i in range(len(expected))]
    expect(rows.first.locator(".step-end")).to_have_text("most specific")
    if len(expected) > 1:
        expect(rows.last.locator(".step-end")).to_have_text("most inclusive")
    expect(page.locator(".traversal .hint")).to_contain_text("how far the image lies inside the text")
    expect(page.locator(".picker img.preview")).to_be_visible()
    screenshot(page, "traverse")


def test_collection_page_shows_histogram_and_extremes(page, server):
    page.goto("/#/collections")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=IMAGE_COLLECTION))
    with server.api() as client:
        stats = client.get(f"/v1/collections/{IMAGE_COLLECTION}", params={"extremes": 6}).json()  # the page shows 6
    expect(row).to_contain_text(str(stats["size"]))
    expect(row).to_contain_text(stats["index"])
    row.get_by_role("link", name=IMAGE_COLLECTION).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(IMAGE_COLLECTION)
    # one bar per histogram bin, each with its range and count as a tooltip
    bars = page.locator("svg.histogram rect.bar")
    expect(bars).to_have_count(len(stats["uncertainty_histogram"]))
    first_bin = stats["uncertainty_histogram"][0]
    expect(bars.first.locator("title")).to_have_text(re.compile(rf": {first_bin['count']} items?$"))
    # log-spaced bins (the demo model's image uncertainties span orders of magnitude) are drawn
    # on a log axis, where every bin has the same width
    assert stats["uncertainty_histogram_scale"] == "log"
    expect(page.locator("svg.histogram .axis-label")).to_contain_text("log scale")
    widths = {round(float(w)) for w in bars.evaluate_all("rects => rects.map(r => r.getAttribute('width'))")}
    assert len(widths) == 1, widths
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text(stats["model_id"])
    expect(facts).to_contain_text(f"{stats['size']:,}")
    # most certain and most uncertain items, as images, in the API's order
    for key, heading in (("most_certain", "Most certain"), ("most_uncertain", "Most uncertain")):
        panel = page.get_by_role("region", name=heading)
        images = panel.locator("img.thumb")
        expect(images).to_have_count(len(stats[key]))
        sources = images.evaluate_all("imgs => imgs.map(i => decodeURIComponent(i.src.split('/items/')[1]))")
        assert sources == [f"{item['id']}/image" for item in stats[key]]
    page.wait_for_function(ALL_THUMBNAILS_LOADED)
    assert unlabelled_controls(page) == []
    screenshot(page, "collection")


def test_indexing_job_runs_to_the_end_with_its_failure_explained(page, server):
    source = server.job_root / "shapes"
    page.goto("/#/jobs")
    # the configured roots are offered as sources
    expect(page.locator("datalist option")).to_have_attribute("value", str(server.job_root.resolve()))
    page.get_by_label("Source").fill(str(source))
    page.get_by_label("Into collection").fill("ui-job-shapes")
    page.get_by_label("Holding").select_option("image")
    page.get_by_role("button", name="Start indexing").click()
    expect(page.locator(".form-status")).to_contain_text("started")
    card = page.locator(".job-card").filter(has_text="ui-job-shapes")
    # watched live: the card's state badge leaves the running states without a reload
    expect(card.locator(".state-badge")).not_to_have_text(re.compile("queued|planning|running"), timeout=45_000)
    expect(card.locator(".state-badge")).to_have_text("completed")
    progress = card.locator("progress")
    expect(progress).to_have_attribute("value", str(JOB_IMAGES + 1))
    expect(card.locator(".progress-text")).to_contain_text("1 failed")
    card.locator("summary").click()
    failure = card.locator(".failures li")
    expect(failure).to_have_count(1)
    expect(failure).to_contain_text("broken.png")
    reason = failure.inner_text().split("—", 1)[1].strip()
    assert len(reason) > 10, f"the failure should say why, got {reason!r}"
    screenshot(page, "jobs")
    # the new collection is there, and its images can be seen
    page.get_by_role("link", name="ui-job-shapes").click()
    expect(page.locator("dl.facts")).to_contain_text(str(JOB_IMAGES))
    expect(page.locator(".extreme img.thumb").first).to_be_visible()
    page.wait_for_function(ALL_THUMBNAILS_LOADED)
    expect(page.locator(".thumb.missing")).to_have_count(0)


def test_a_job_outside_the_allowed_roots_is_refused_with_a_reason(page):
    page.goto("/#/jobs")
    page.get_by_label("Source").fill("/etc")
    page.get_by_label("Into collection").fill("not-allowed")
    page.get_by_role("button", name="Start indexing").click()
    error = page.locator(".form-status .inline-error")
    expect(error).to_be_visible()
    assert "/etc" in error.inner_text() or "root" in error.inner_text().lower()


def test_unknown_collection_reads_as_a_message_not_a_blank_page(page):
    page.goto("/#/collections/no-such-collection")
    error = page.locator(".inline-error")
    expect(error).to_contain_text("no-such-collection")
    expect(page.get_by_role("link", name="Back to the collections")).to_be_visible()


def test_unknown_page_offers_a_way_back(page):
    page.goto("/#/nowhere")
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    page.get_by_role("link", name="Go to search").click()
    expect(page.get_by_label("Describe what you are looking for")).to_be_visible()


@pytest.mark.parametrize("page", [{"width": 390, "height": 844}], indirect=True)
def test_collection_and_jobs_pages_fit_a_phone(page):
    page.goto(f"/#/collections/{IMAGE_COLLECTION}")
    expect(page.locator("svg.histogram")).to_be_visible()
    assert no_horizontal_overflow(page)
    screenshot(page, "collection-phone")
    page.goto("/#/jobs")
    expect(page.get_by_role("button", name="Start indexing")).to_be_visible()
    assert no_horizontal_overflow(page)


def test_api_docs_render_every_operation_with_nothing_from_a_cdn(page, server):
    # the page fixture fails the test if anything is fetched from outside the service
    with server.api() as client:
        schema = client.get("/openapi.json").json()
    operations = sum(1 for methods in schema["paths"].values() for method in methods
                     if method in {"get", "post", "put", "patch", "delete"})
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("prolip-retrieval")
    expect(page.locator(".swagger-ui .opblock")).to_have_count(operations)
    screenshot(page, "api-docs")


@pytest.mark.parametrize("page", [{"width": 390, "height": 844}], indirect=True)
def test_the_traversal_fits_a_phone(page):
    """Issue #16, defect 15: at 390 px the traversal table was cut off."""
    page.goto("/#/search?q=a+small+blue+triangle")
    page.locator(".result-card").first.get_by_role("link", name="Traverse").click()
    rows = page.locator(".traversal-table tbody tr")
    expect(rows.first).to_be_visible()
    assert no_horizontal_overflow(page)
    assert page.evaluate("""() => {
        const box = document.querySelector('.table-scroll');
        const cells = [...document.querySelectorAll('.traversal-table tbody th, .traversal-table tbody td')];
        return box.scrollWidth <= box.clientWidth + 1
            && cells.every(c => c.getBoundingClientRect().right <= window.innerWidth + 1);
    }""")
    screenshot(page, "traverse-phone")


def test_images_indexed_from_web_addresses_load_from_there_only_with_consent(page, server):
    """Issue #16, defect 15: URL-indexed items showed "image unavailable" although their URL was known."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.ui.helpers import scene_png

    images = {f"/web{i}.png": scene_png("val", 10 + i) for i in range(3)}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = images.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    web = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{web.server_address[1]}"
    try:
        manifest = server.job_root / "web.jsonl"
        manifest.write_text("\n".join(json.dumps({"id": f"web{i}", "url": f"{origin}/web{i}.png"}) for i in range(3)))
        with server.api() as client:
            job = client.post("/v1/jobs", json={"source": str(manifest), "collection": "web-images"}).json()
            for _ in range(600):
                job = client.get(f"/v1/jobs/{job['id']}").json()
                if job["state"] not in ("queued", "planning", "running"):
                    break
                page.wait_for_timeout(100)
        assert (job["state"], job["done"]) == ("completed", 3), job
        page.goto("/#/search?mode=text&c=web-images&q=a+red+circle")
        cards = page.locator(".result-card")
        expect(cards).to_have_count(3)
        # off by default: nothing is fetched from the web address, and the card says why
        expect(cards.first.locator(".thumb.missing")).to_contain_text(f"on the web at {origin.split('//')[1]}")
        assert not page.problems.foreign_requests
        expect(cards.first.locator(".item-name")).to_have_text(re.compile(r"^web\d\.png$"))
        expect(cards.first.locator(".item-name")).to_have_attribute("title", re.compile(rf"^{origin}/web\d\.png$"))
        screenshot(page, "search-web-images-off")
        cards.first.get_by_role("button", name="Show web images").click()
        expect(page.get_by_role("button", name="Web images: on")).to_be_visible()
        page.wait_for_function("""() => [...document.querySelectorAll('.result-card img.thumb')].length === 3
            && [...document.querySelectorAll('.result-card img.thumb')].every(i => i.complete && i.naturalWidth > 0)""")
        screenshot(page, "search-web-images-on")
        fetched = sorted(url for url in page.problems.foreign_requests)
        assert fetched == sorted(f"{origin}/web{i}.png" for i in range(3))
        page.problems.foreign_requests.clear()  # loaded from there by the user's choice, and only those
    finally:
        web.shutdown()
        web.server_close()
