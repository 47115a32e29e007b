"""The page's attribute filter: ``where`` on ``POST /api/search`` (stored labels), the filter box on the page,
and one sentence for a bad filter or a gallery without labels."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from _serve_fixtures import build_service
from vireid.data.attribute_table import decode
from vireid.data.synth.attributes import synthetic_labels
from vireid.retrieval.index import GalleryIndex
from vireid.serve import create_app


@pytest.fixture(scope="module")
def labelled(tiny_synth_root, tmp_path_factory):
    service = build_service(tiny_synth_root, tmp_path_factory.mktemp("serve-attr"))
    index = GalleryIndex.load(service.index_dir)
    index.attributes = synthetic_labels(0, "sysu-mm01", [str(p) for p in index.metadata.paths])  # cam*/<pid>/<n>.jpg
    index.info["attributes"] = "stored"
    labelled_dir = index.save(service.index_dir.parent / "index-labelled")
    return service, GalleryIndex.load(labelled_dir)


def _search(client, service, **fields):
    data = service.query_member.read_bytes()
    return client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")}, data=fields)


def _sentence(response) -> str:
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert "\n" not in message and ". " not in message.rstrip("."), message
    return message


def test_page_filter_box_and_filtered_api_search(labelled):
    service, index = labelled
    client = TestClient(create_app(service.embedder, index))
    page = client.get("/").text
    assert 'id="where"' in page and 'placeholder="modality=infrared,backpack=yes"' in page
    answer = _search(client, service, where="modality=infrared,backpack=yes", k="10").json()
    wanted = [i for i in range(index.ntotal) if index.metadata.modalities[i] == "infrared"
              and decode(index.attributes[i])["backpack"] == "yes"]
    assert wanted and len(wanted) < index.ntotal // 2
    assert answer["where"] == "modality=infrared,backpack=yes" and answer["attribute_labels"] == "stored"
    assert answer["gallery_modality"] == "infrared"
    assert sorted(r["id"] for r in answer["results"]) == sorted(wanted)  # every match, nothing else
    assert all(r["attributes"]["backpack"] == "yes" and r["attributes"]["top_colour"] is None for r in answer["results"])
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    none = _search(client, service, where="modality=infrared,backpack=yes,hat=yes|no,bottom=skirt").json()
    if not none["results"]:
        assert none["note"] == "no gallery image passes the filter"
    assert "'teal' is not a value of attribute top_colour" in _sentence(_search(client, service, where="top_colour=teal"))
    assert "'umbrella' is not a known attribute" in _sentence(_search(client, service, where="umbrella=yes"))


def test_a_gallery_without_labels_refuses_an_attribute_filter(labelled):
    service, _ = labelled
    client = TestClient(create_app(service.embedder, service.index))
    assert "holds no attribute labels" in _sentence(_search(client, service, where="backpack=yes"))
    answer = _search(client, service, where="modality=visible", k="3").json()  # modality alone needs no labels
    assert answer["gallery_modality"] == "visible" and {r["modality"] for r in answer["results"]} == {"visible"}
    assert answer["attribute_labels"] is None and "attributes" not in answer["results"][0]
    assert np.all([r["id"] >= 0 for r in answer["results"]])
