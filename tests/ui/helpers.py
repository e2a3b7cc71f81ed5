"""What the browser tests share besides fixtures: reading the UI's state and the API's answer to compare."""

from __future__ import annotations

import io

IMAGE_COLLECTION = "demo-images"
TEXT_COLLECTION = "demo-captions"


def card_ids(page) -> list[str]:
    return page.locator(".result-card").evaluate_all("cards => cards.map(c => c.dataset.id)")


def api_search_ids(server, query: str, collection: str, k: int, rank: str, collapse: bool = True) -> list[str]:
    """The API's result ids, near-duplicates collapsed as the UI asks by default."""
    with server.api() as client:
        response = client.post("/v1/search/text", json={"query": query, "collection": collection, "k": k,
                                                         "rank": rank, "collapse_duplicates": collapse})
    response.raise_for_status()
    return [hit["id"] for hit in response.json()["results"]]


def scene_png(split: str = "val", index: int = 0) -> bytes:
    """A demo scene the service has not indexed (the demo collections use the test split)."""
    from models.demo_data import generate

    buffer = io.BytesIO()
    generate(split, 1, start=index)[0].image.save(buffer, format="PNG")
    return buffer.getvalue()


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")


def unlabelled_controls(page) -> list[str]:
    """Visible form controls without an accessible name (label, aria-label or aria-labelledby)."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => el.type !== 'hidden')
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
        .map(el => el.outerHTML.slice(0, 120))""")
