"""The OpenAPI document is complete enough for a standard client generator.

openapi-python-client (a test dependency) generates a client from the document the app
publishes; the generator must report nothing it skipped, and the generated client must drive a
real server: search, add texts (JSON) and images (multipart), read an item's image back, and
parse an error.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import make_settings, png_bytes

GENERATED = "prolip_generated_client"
# Generated modules that do not import because of a generator bug, not a fault of the document:
# openapi-python-client 0.29 writes `body: A | B | Unset` without importing Unset for an operation
# with two body types (upstream issue #1451). POST .../texts and .../images carry one body type each.
GENERATOR_BUGS = {"api.collections.add_items": "name 'Unset' is not defined"}


def _document(tmp_path: Path, model_dir: Path) -> dict:
    from service.app import create_app

    return create_app(make_settings(tmp_path / "unused", model_dir)).openapi()


def _refs(node, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.append(node["$ref"])
        for child in node.values():
            _refs(child, found)
    elif isinstance(node, list):
        for child in node:
            _refs(child, found)
    return found


def test_every_reference_resolves_and_every_media_type_is_named(tmp_path, model_dir):
    document = _document(tmp_path, model_dir)
    components = document["components"]["schemas"]
    refs = _refs(document, [])
    assert "#/components/schemas/TextItemsRequest" in refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, ref
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            bodies = [operation.get("requestBody", {})] + list(operation["responses"].values())
            for media_type in (m for body in bodies for m in body.get("content", {})):
                assert "*" not in media_type, f"{method.upper()} {path} declares {media_type}"
    image = document["paths"]["/v1/collections/{name}/items/{item_id}/image"]["get"]["responses"]["200"]
    assert {"image/png", "image/jpeg", "application/octet-stream"} <= set(image["content"])
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) and "add_items" in ids and "search_text" in ids


@pytest.fixture(scope="module")
def generated(tmp_path_factory, model_dir):
    """The client openapi-python-client generates from the app's document, imported."""
    folder = tmp_path_factory.mktemp("generated")
    spec = folder / "openapi.json"
    spec.write_text(json.dumps(_document(folder, model_dir)))
    package = folder / GENERATED
    # the generator's post-hooks run ruff from PATH: the one of this interpreter's environment
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([Path(sys.executable).parent / "openapi-python-client", "generate", "--path", str(spec),
                          "--output-path", str(package), "--meta", "none"],
                         capture_output=True, text=True, env=env, timeout=120)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "Warning" not in report and "WARNING" not in report, report  # nothing skipped or left out
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(GENERATED)
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == GENERATED or n.startswith(GENERATED + ".")]:
            del sys.modules[name]


def _module(name: str):
    return importlib.import_module(f"{GENERATED}.{name}")


def test_every_generated_module_imports(generated):
    root = Path(generated.__file__).parent
    names = sorted(".".join(p.relative_to(root).with_suffix("").parts) for p in root.rglob("*.py"))
    names = [n.removesuffix(".__init__") for n in names if n != "__init__"]
    assert "api.collections.add_text_items" in names and "api.collections.item_image" in names
    for name in names:
        if name in GENERATOR_BUGS:  # still broken upstream; when it imports, drop it from GENERATOR_BUGS
            with pytest.raises(NameError, match=GENERATOR_BUGS[name]):
                _module(name)
        else:
            _module(name)


def test_a_generated_client_searches_adds_items_and_reads_images(generated, server):
    api = _module("api")
    models = _module("models")
    types = _module("types")
    search_text = importlib.import_module(f"{api.__name__}.search.search_text")
    add_texts = importlib.import_module(f"{api.__name__}.collections.add_text_items")
    add_images = importlib.import_module(f"{api.__name__}.collections.add_image_items")
    item_image = importlib.import_module(f"{api.__name__}.collections.item_image")
    get_item = importlib.import_module(f"{api.__name__}.collections.get_item")
    client = generated.Client(base_url=server.url, timeout=httpx.Timeout(30.0))

    # search: the same results as the raw API
    body = models.TextSearchRequest(query="a photo of a dog", collection="captions", k=3,
                                    rank=models.TextSearchRequestRank.COSINE)
    found = search_text.sync(client=client, body=body)
    assert isinstance(found, models.SearchResponse), found
    raw = httpx.post(server.url + "/v1/search/text", timeout=30,
                     json={"query": "a photo of a dog", "collection": "captions", "k": 3, "rank": "cosine"}).json()
    assert [hit.id for hit in found.results] == [hit["id"] for hit in raw["results"]]
    assert found.results[0].metadata["text"] == "a photo of a dog"

    # add texts through the JSON body the document now defines
    texts = models.TextItemsRequest(items=[models.TextItemIn(text="a blue square", id="gen-1"),
                                           models.TextItemIn(text="a green circle", id="gen-2")])
    added = add_texts.sync("gen-texts", client=client, body=texts)
    assert isinstance(added, models.AddItemsResponse), added
    assert added.created and added.ids == ["gen-1", "gen-2"] and added.size == 2
    item = get_item.sync("gen-texts", "gen-2", client=client)
    assert item.metadata["text"] == "a green circle"

    # add images as a multipart form, then read one back byte for byte
    pictures = [png_bytes(40 + i) for i in range(2)]
    form = models.AddImageItemsBody(
        files=[types.File(payload=io.BytesIO(data), file_name=f"p{i}.png", mime_type="image/png")
               for i, data in enumerate(pictures)],
        ids=["pic-0", "pic-1"])
    added = add_images.sync("gen-images", client=client, body=form)
    assert isinstance(added, models.AddItemsResponse), added
    assert added.ids == ["pic-0", "pic-1"]
    response = item_image.sync_detailed("gen-images", "pic-1", client=client)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.parsed.payload.read() == pictures[1]

    # errors arrive parsed, with the API's code
    missing = search_text.sync(client=client, body=models.TextSearchRequest(query="a dog", collection="nowhere"))
    assert isinstance(missing, models.ErrorResponse) and missing.error.code == "unknown_collection"
