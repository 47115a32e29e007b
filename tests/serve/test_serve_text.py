"""The page's text search: ``POST /api/search-text`` and the ``text`` field of ``POST /api/search`` with a text
model, the text box on the page, and bad text input answered with a 4xx and one sentence."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import REPO
from vireid.retrieval.text_search import MAX_QUERY_CHARS
from vireid.serve import create_app


class ImageOnly:
    """The same embedder seen as an image model (no text branch), for the refusals."""

    def __init__(self, inner):
        self.inner = inner
        self.dim, self.input_size, self.verification = inner.dim, inner.input_size, None

    def embed_arrays(self, images, modalities):
        return self.inner.embed_arrays(images, modalities)


@pytest.fixture(scope="module")
def text_service(tiny_synth_root, tmp_path_factory):
    """A text_image model (random weights), an index of a few synthetic images embedded with it, a query image."""
    import torch

    from vireid.config import load_config
    from vireid.engine.checkpoint import atomic_torch_save
    from vireid.engine.trainer import build_model
    from vireid.inference.loading import load_embedder
    from vireid.retrieval.features import FeatureSet, Metadata
    from vireid.retrieval.index import GalleryIndex

    out = tmp_path_factory.mktemp("serve-text")
    cfg = load_config(REPO / "configs" / "text_synth.yaml", ["model.params.text_embed_dim=16",
                                                             "model.params.text_hidden=16"])
    torch.manual_seed(0)
    model = build_model(cfg, 4).eval()
    ckpt = out / "text.pt"
    atomic_torch_save({"model": model.state_dict(), "config": asdict(cfg), "num_classes": 4}, ckpt)
    embedder = load_embedder(ckpt)
    rows = [(tiny_synth_root / f"cam{cam}" / f"{pid:04d}" / "0001.jpg", pid, cam, mod)
            for pid in (1, 2, 3) for cam, mod in ((1, "visible"), (3, "infrared"))]
    paths, pids, cams, mods = (list(column) for column in zip(*rows))
    feats = embedder.embed_paths(paths, mods)
    meta = Metadata.from_images(paths, pids, cams, mods, root=tiny_synth_root)
    index = GalleryIndex.build(FeatureSet(feats, meta, {"checkpoint": str(ckpt)}), kind="flat")
    return embedder, index, paths[0], feats


def test_text_search_route_ranks_the_gallery(text_service):
    embedder, index, _, feats = text_service
    client = TestClient(create_app(embedder, index))
    assert client.get("/api/health").json()["model"]["text"] is True
    r = client.post("/api/search-text", json={"text": "a woman with a backpack", "gallery_modality": "infrared", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "a woman with a backpack" and body["query_modality"] == "text"
    assert len(body["results"]) == 3 and {x["modality"] for x in body["results"]} == {"infrared"}
    assert body["threshold"] is None and body["verdict"] is None  # no image-pair threshold for words
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)
    # the scores are the cosine similarities of the model's text embedding with the gallery's
    from vireid.retrieval.text_search import embed_text_queries

    query = embed_text_queries(embedder, ["a woman with a backpack"])
    gallery = feats[[x["id"] for x in body["results"]]]
    np.testing.assert_allclose(query @ gallery.T, [scores], atol=1e-4)


def test_image_plus_text_and_the_page(text_service):
    embedder, index, query, _ = text_service
    client = TestClient(create_app(embedder, index))
    data = query.read_bytes()
    r = client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")},
                    data={"text": "a man in trousers", "k": "2", "modality": "visible"})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "a man in trousers" and r.json()["verdict"] is None
    page = client.get("/").text
    assert 'id="text"' in page and 'maxlength="300"' in page and "/api/search-text" in page


def _one_sentence(response) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    message = response.json()["error"]
    assert "\n" not in message and ". " not in message.rstrip("."), message
    return message


def test_bad_text_requests_are_one_sentence(text_service):
    embedder, index, query, _ = text_service
    client = TestClient(create_app(embedder, index))
    cases = [
        ({"text": "  "}, "the query text is empty"),
        ({"text": "x" * (MAX_QUERY_CHARS + 1)}, f"give at most {MAX_QUERY_CHARS}"),
        ({"k": 3}, "the field 'text'"),
        ({"text": "a man", "k": 0}, "k must be a whole number"),
        ({"text": "a man", "gallery_modality": "sideways"}, "gallery_modality 'sideways' is unknown"),
        ({"text": "a man", "colour": "red"}, "unknown field 'colour'"),
        (["a man"], "must be a JSON object"),
    ]
    for body, message in cases:
        assert message in _one_sentence(client.post("/api/search-text", json=body)), body
    assert "as JSON" in _one_sentence(client.post("/api/search-text", data={"text": "a man"}))
    data = query.read_bytes()
    r = client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"text": " "})
    assert "the query text is empty" in _one_sentence(r)
    # an image model cannot search with words
    image_client = TestClient(create_app(ImageOnly(embedder), index))
    assert image_client.get("/api/health").json()["model"]["text"] is False
    assert "not trained with text descriptions" in _one_sentence(image_client.post("/api/search-text",
                                                                                   json={"text": "a man"}))
    r = image_client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"text": "a man"})
    assert "not trained with text descriptions" in _one_sentence(r)
