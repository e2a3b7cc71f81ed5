"""Calibrated probability through the API, on the demo model and its shipped calibrator.

A general query with min_probability 0.5 returns its true matches; rank=probability is the exact
order of the calibrator's own numbers; BPRW re-weights prompts from labelled examples; an
explicit calibration file is read, and one fitted for other weights is refused.
"""

from __future__ import annotations

import numpy as np
import pytest

from models import demo_data
from models.calibration import Calibrator, load_for_model
from models.gaussian import PairLogit
from models.prompt_weighting import reweight_class

from .conftest import add_images, png_bytes

SCENES = 60


@pytest.fixture(scope="module")
def demo_encoder():
    from models.encoder import Encoder

    return Encoder.load(None, device="cpu", batch_size=64)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_encoder, model_dir):
    from fastapi.testclient import TestClient

    from service.app import create_app

    from .conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("demo") / "data", model_dir, demo=True, demo_scenes=SCENES)
    with TestClient(create_app(settings, encoder=demo_encoder), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("query", ["an object", "a circle", "a triangle"])  # caption levels 0 and 1
def test_a_general_query_with_min_probability_returns_its_true_matches(demo, query):
    response = demo.post("/v1/search/text", json={"query": query, "collection": "demo-images", "k": SCENES,
                                                 "rank": "probability", "min_probability": 0.5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["calibrated"] is True
    returned = {hit["id"] for hit in body["results"]}
    truth = {scene.id for scene in demo_data.generate("test", SCENES) if scene.matches(query)}
    # the bar for general queries (levels 0 and 1), here on the demo collection, 15 % of it corrupted
    assert truth and len(returned & truth) >= 0.9 * len(returned)  # precision
    assert len(returned & truth) >= 0.9 * len(truth)  # recall
    assert all(hit["probability"] >= 0.5 for hit in body["results"])
    # the raw pair probability would have kept almost nothing
    assert sum(hit["pair_probability"] >= 0.5 for hit in body["results"]) < len(returned) / 2


def test_min_probability_and_filters_apply_before_paging_with_rank_probability(demo):
    """The result list is cut by min_probability and restricted by the filter first; pages are slices of it."""
    def search(**body):
        response = demo.post("/v1/search/text", json={"query": "a circle", "collection": "demo-images", **body})
        assert response.status_code == 200, response.text
        return response.json()

    for rank in ("probability", "cosine"):
        whole = search(k=SCENES, rank=rank, min_probability=0.5)["results"]
        first = search(k=3, rank=rank, min_probability=0.5)
        rest = search(k=SCENES - 3, rank=rank, min_probability=0.5, cursor=first["next_cursor"])
        assert [h["id"] for h in first["results"] + rest["results"]] == [h["id"] for h in whole]
        blurred = {"field": "corruption", "eq": "blur"}
        within = search(k=4, rank=rank, filter=blurred)
        everything = search(k=SCENES, rank=rank)["results"]
        assert [h["id"] for h in within["results"]] == [h["id"] for h in everything
                                                        if h["metadata"]["corruption"] == "blur"][:4]
        assert within["matched"] == sum(h["metadata"]["corruption"] == "blur" for h in everything)


def test_rank_probability_is_the_exact_order_of_the_calibrators_numbers(demo, demo_encoder):
    calibrator = demo_encoder.calibrator
    query = demo_encoder.encode_texts(["a blue triangle"])
    body = demo.post("/v1/search/text", json={"query": "a blue triangle", "collection": "demo-images", "k": 10,
                                             "rank": "probability"}).json()
    assert body["rank"] == "probability" and len(body["results"]) == 10
    # every image's probability, straight from the calibrator, over the whole collection
    all_ids, probabilities = [], []
    for hit in demo.post("/v1/search/text", json={"query": "a blue triangle", "collection": "demo-images",
                                                 "k": SCENES, "rank": "cosine"}).json()["results"]:
        all_ids.append(hit["id"])
        probabilities.append(float(calibrator.probability(hit["cosine"], query.uncertainty[0], hit["uncertainty"])))
    expected = [all_ids[i] for i in np.argsort(-np.array(probabilities), kind="stable")[:10]]
    got = [hit["id"] for hit in body["results"]]
    ties = sorted(probabilities, reverse=True)[9]
    assert set(got) ^ set(expected) <= {i for i, p in zip(all_ids, probabilities, strict=True) if abs(p - ties) < 1e-9}
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose([hit["probability"] for hit in body["results"]], 1 / (1 + np.exp(-np.array(scores))),
                               rtol=1e-9)


def test_an_image_query_ranks_the_captions_true_of_it_first(demo):
    scene = demo_data.make_scene("test", 3)
    import io

    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG")
    body = demo.post("/v1/search/image", files={"file": ("q.png", buffer.getvalue(), "image/png")},
                     data={"collection": "demo-captions", "k": "8", "rank": "probability",
                           "min_probability": "0.5"}).json()
    texts = [hit["metadata"]["text"] for hit in body["results"]]
    assert texts and all(scene.matches(text) for text in texts)
    assert "an object" in texts and scene.captions[1] in texts  # the general truths are found, not buried
    traversal = demo.post("/v1/traverse/image", files={"file": ("q.png", buffer.getvalue(), "image/png")},
                          data={"collection": "demo-captions", "method": "inclusion", "min_probability": "0.5"}).json()
    assert traversal["calibrated"] is True
    steps = [step["text"] for step in traversal["captions"]]
    assert steps and all(scene.matches(text) for text in steps) and steps[-1] == "an object"


def test_text_on_text_has_no_calibrated_probability(demo):
    body = demo.post("/v1/search/text", json={"query": "a circle", "collection": "demo-captions", "k": 3}).json()
    assert body["calibrated"] is False and all(hit["probability"] is None for hit in body["results"])
    refused = demo.post("/v1/search/text", json={"query": "a circle", "collection": "demo-captions",
                                                "rank": "probability"})
    assert refused.status_code == 409 and "text-image pairs" in refused.json()["error"]["message"]


def test_bprw_reweights_prompts_from_labelled_examples(demo, demo_encoder):
    labels = ["circle", "square", "triangle", "cross"]
    templates = ["a {}", "a red {}", "a small {}", "a large {}", "a {} on the left"]
    scenes = demo_data.generate("test", SCENES)
    examples = {label: [s.id for s in scenes if len(s.objects) == 1 and s.objects[0].shape == label][:3]
                for label in labels}
    ids = [i for label in labels for i in examples[label]]
    id_labels = [label for label in labels for _ in examples[label]]
    query = scenes[5]
    import io

    buffer = io.BytesIO()
    query.image.save(buffer, format="PNG")
    response = demo.post("/v1/rank", files={"file": ("q.png", buffer.getvalue(), "image/png")},
                         data={"candidates": labels, "templates": templates, "prompt_filter": "bprw",
                               "example_ids": ids, "example_id_labels": id_labels, "rank": "probability"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["calibrated"] is True
    by_label = {r["label"]: r for r in body["results"]}
    for label in labels:
        result = by_label[label]
        assert result["examples"] == len(examples[label]) and len(result["prompts_kept"]) == len(templates)
        assert sum(result["prompt_weights"]) == pytest.approx(1.0)
    # the class embedding is the official BPRW mixture of the prompts, from the same seeded draws
    prompts = demo_encoder.encode_texts([t.replace("{}", label) for label in labels for t in templates])
    shots = demo_encoder.encode_images([s.image for s in scenes if s.id in set(examples["circle"])])
    c = labels.index("circle")
    rows = slice(c * len(templates), (c + 1) * len(templates))
    expected = reweight_class(prompts.mean[rows], np.exp(prompts.logvar[rows].astype(np.float64)), shots.mean,
                              shots.logvar, rng=np.random.default_rng([0, c]))
    np.testing.assert_allclose(by_label["circle"]["prompt_weights"], expected.weights, atol=1e-6)
    image = demo_encoder.encode_images([query.image])
    mean = expected.mean / np.linalg.norm(expected.mean)
    assert by_label["circle"]["cosine"] == pytest.approx(float(image.mean[0].astype(np.float64) @ mean), abs=1e-5)
    # uploads work as examples too; a label that is not a candidate is refused in words
    upload = demo.post("/v1/rank", files=[("file", ("q.png", buffer.getvalue(), "image/png")),
                                          ("example_files", ("e.png", png_bytes(1), "image/png"))],
                       data={"candidates": labels, "templates": templates, "prompt_filter": "bprw",
                             "example_labels": ["square"]})
    assert upload.status_code == 200 and {r["label"]: r["examples"] for r in upload.json()["results"]}["circle"] == 0
    bad = demo.post("/v1/rank", files={"file": ("q.png", buffer.getvalue(), "image/png")},
                    data={"candidates": labels, "templates": templates, "prompt_filter": "bprw",
                          "example_ids": ids[:1], "example_id_labels": ["hexagon"]})
    assert bad.status_code == 422 and "not among the candidates" in bad.json()["error"]["message"]
    missing = demo.post("/v1/rank", files={"file": ("q.png", buffer.getvalue(), "image/png")},
                        data={"candidates": labels, "templates": templates, "prompt_filter": "bprw",
                              "example_ids": ["no-such-scene"], "example_id_labels": ["circle"]})
    assert missing.status_code == 404


def test_an_explicit_calibration_file_is_read_and_one_for_other_weights_refused(make_client, encoder, tmp_path):
    calibrator = Calibrator(encoder.model_id, PairLogit.ppcl(10.0, -5.0), {"cosine": 8.0}, -2.0)
    path = calibrator.save(tmp_path / "elsewhere" / "calibration.json")
    client = make_client(tmp_path / "data", calibration=str(path))
    add_images(client)
    body = client.post("/v1/search/text", json={"query": "a red circle", "collection": "images", "k": 3,
                                               "rank": "probability"}).json()
    assert body["calibrated"] is True
    np.testing.assert_allclose([h["probability"] for h in body["results"]],
                               [1 / (1 + np.exp(-(8 * h["cosine"] - 2))) for h in body["results"]], rtol=1e-9)
    other = Calibrator("other@0123456789ab", PairLogit.ppcl(10.0, -5.0), {"cosine": 8.0}, -2.0)
    other_path = other.save(tmp_path / "other.json")
    with pytest.raises(Exception, match="fitted for model"):
        make_client(tmp_path / "data2", calibration=str(other_path))
    assert load_for_model(tmp_path / "elsewhere", encoder.model_id) == calibrator
