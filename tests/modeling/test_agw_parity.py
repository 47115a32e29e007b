"""``vireid import agw`` + ``vireid extract`` reproduce the AGW / CAJ reference network's embeddings.

The reference network is rebuilt independently in ``_agw_reference.py`` from the structure the
reference code (mangye16/Cross-Modal-Re-ID-baseline ``model.py`` / ``resnet.py``) documents: same
state_dict keys and shapes, same forward maths, random weights and randomised BN statistics. It is
saved as the reference's ``train.py`` saves (``{'net', 'cmc', 'mAP', 'mINP', 'epoch'}``), imported
through the CLI, and the real SYSU-MM01 crops of ``tests/data`` are embedded by ``vireid extract``
(which resizes them to 288x144 itself) and by the reference forward (Lanczos resize, as its
``TestData``). One ResNet-50 reference for the whole module.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _agw_reference import EmbedNet, preprocess, randomise  # noqa: E402
from conftest import REAL_MINI  # noqa: E402

VISIBLE = [REAL_MINI / "cam1" / "0001" / "0001.png", REAL_MINI / "cam2" / "0003" / "0002.png"]
INFRARED = [REAL_MINI / "cam3" / "0001" / "0001.png", REAL_MINI / "cam6" / "0003" / "0002.png"]


def _cli(*args: str) -> str:
    from typer.testing import CliRunner

    import vireid.cli.commands  # noqa: F401  (registers the sub-commands)
    from vireid.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reference net, its checkpoints (plain and DataParallel-prefixed), its FC/POOL embeddings of the crops."""
    torch.set_num_threads(1)
    pixels = {1: torch.cat([preprocess(p) for p in VISIBLE]), 2: torch.cat([preprocess(p) for p in INFRARED])}
    net = randomise(EmbedNet(class_num=395), seed=11, calibration=pixels)
    pool_v, fc_v = net(pixels[1], 1)
    pool_i, fc_i = net(pixels[2], 2)
    folder = tmp_path_factory.mktemp("agw-reference")
    state = net.state_dict()
    saved = {"net": state, "cmc": np.linspace(0.475, 0.99, 20), "mAP": np.float64(0.4765), "mINP": np.float64(0.353), "epoch": 48}
    torch.save(saved, folder / "sysu_agw_best.t")
    torch.save({**saved, "net": {f"module.{k}": v for k, v in state.items()}}, folder / "sysu_agw_dp_best.t")
    images = folder / "crops"
    for modality, paths in (("visible", VISIBLE), ("infrared", INFRARED)):
        for n, path in enumerate(paths):
            (images / modality).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, images / modality / f"{n}.png")  # original ~40x110 crops: extract resizes them
    return {
        "net": net, "state": state, "folder": folder, "images": images,
        "fc": torch.cat([fc_v, fc_i]).numpy(), "pool": torch.cat([pool_v, pool_i]).numpy(),
    }


def _extract(run: Path, images: Path, out: Path) -> np.ndarray:
    from vireid.retrieval.features import FeatureSet

    _cli("extract", "--checkpoint", str(run), "--images", str(images), "--out", str(out), "--json")
    feats = FeatureSet.load(out)
    order = {f"{m}/{n}.png": row for row, (m, n) in enumerate([(m, n) for m in ("visible", "infrared") for n in range(2)])}
    result = np.zeros_like(feats.features)
    for row, path in enumerate(feats.meta.paths):
        result[order[Path(path).parent.name + "/" + Path(path).name]] = feats.features[row]
    return result


def _assert_parity(ours: np.ndarray, ref: np.ndarray) -> None:
    cosine = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    diff = np.abs(ours - ref).max(1)
    assert cosine.min() >= 0.99999, cosine
    assert diff.max() <= 1e-4, diff
    assert float(ours[0] @ ours[1]) < 0.999  # distinct images give distinct embeddings (nothing degenerate)


def test_imported_checkpoint_extracts_the_reference_fc_embeddings(reference, tmp_path):
    run = tmp_path / "agw-run"
    out = _cli("import", "agw", str(reference["folder"] / "sysu_agw_best.t"), "--out", str(run))
    assert "395 classes" in out and "epoch 48" in out and "rank1 0.4750" in out
    assert (run / "config.yaml").is_file() and (run / "best.pt").is_file()
    from vireid.config import load_config

    cfg = load_config(run / "config.yaml")
    assert cfg.model.params["non_local"] == "agw" and cfg.model.params["pooling"] == "gem_agw"
    assert cfg.data.resample == "lanczos" and (cfg.data.height, cfg.data.width) == (288, 144)
    assert cfg.train.amp == "none"  # the reference evaluates in fp32; auto would pick bf16 on AMX CPUs
    _assert_parity(_extract(run, reference["images"], tmp_path / "feats"), reference["fc"])


def test_dataparallel_checkpoint_with_pool_embedding(reference, tmp_path):
    run = tmp_path / "agw-pool"
    _cli("import", "agw", str(reference["folder"] / "sysu_agw_dp_best.t"), "--out", str(run), "--embedding", "pool")
    _assert_parity(_extract(run, reference["images"], tmp_path / "feats"), reference["pool"])
    # the imported folder serves the other commands: index + search, verify with an explicit threshold
    _cli("index", str(tmp_path / "feats"), "--out", str(tmp_path / "index"))
    found = _cli("search", str(VISIBLE[0]), "--index", str(tmp_path / "index"), "--checkpoint", str(run),
                 "--modality", "visible", "--top-k", "1", "--json")
    assert "visible/0.png" in found  # the query's own crop is its nearest neighbour
    # serve: an uploaded crop is resized as the reference does (Lanczos), so it finds its own gallery row at 1.0
    from fastapi.testclient import TestClient

    from vireid.inference.loading import load_embedder
    from vireid.retrieval.index import GalleryIndex
    from vireid.serve import create_app

    client = TestClient(create_app(load_embedder(run), GalleryIndex.load(tmp_path / "index")))
    answer = client.post("/api/search", files={"file": ("q.png", VISIBLE[0].read_bytes(), "image/png")},
                         data={"modality": "visible", "gallery_modality": "visible", "k": "1"})
    assert answer.status_code == 200, answer.text
    top = answer.json()["results"][0]
    assert top["name"].endswith("0.png") and top["modality"] == "visible" and top["score"] > 0.9999, top
    verdict = json.loads(_cli("verify", str(INFRARED[0]), str(VISIBLE[0]), "--checkpoint", str(run),
                              "--threshold", "0.5", "--json"))
    assert verdict["similarity"] == pytest.approx(float(reference["pool"][2] @ reference["pool"][0]), abs=1e-4)


def test_every_reference_key_is_used_or_documented_unused(reference):
    from vireid.config import load_config
    from vireid.engine.trainer import build_model
    from vireid.workflows.import_agw import map_reference_state, model_params, reference_layout, unused_by_reference

    state = reference["state"]
    layout = reference_layout(state)
    assert (layout.num_classes, layout.non_local, layout.inter_channels) == (395, True, 1)
    cfg = load_config(None, ["data.height=288", "data.width=144"])
    cfg.model.params = model_params(layout)
    model = build_model(cfg, layout.num_classes)
    mapped, unused = map_reference_state(state, model)
    assert set(mapped) == set(model.state_dict())  # every vireid tensor gets a value (pool.p: GeM's constant p = 3)
    used = set(state) - set(unused)
    assert len(used) == len(mapped) - 1  # every reference key the forward reads lands in exactly one vireid key
    # the unused ones are exactly the copies the reference forward never reads
    assert all(unused_by_reference(k) for k in unused) and len(unused) > 0
    assert {k.split(".")[2] for k in unused if not k.startswith("base_resnet")} == {"layer1", "layer2", "layer3", "layer4"}
    assert {k.split(".")[2] for k in unused if k.startswith("base_resnet")} == {"conv1", "bn1"}
    assert any(k.startswith("NL_3.2.") for k in used) and any(k.startswith("thermal_module.thermal.bn1.") for k in used)


def test_missing_and_unmapped_keys_are_named_in_one_sentence(reference):
    from vireid.config import load_config
    from vireid.engine.trainer import build_model
    from vireid.errors import VireidError
    from vireid.workflows.import_agw import map_reference_state, model_params, reference_layout

    state = dict(reference["state"])
    cfg = load_config(None, ["data.height=288", "data.width=144"])
    cfg.model.params = model_params(reference_layout(state))
    model = build_model(cfg, 395)
    stray = {**state, "NL_3.0.extra_gate.weight": torch.zeros(1), "attention_head.weight": torch.zeros(3)}
    with pytest.raises(VireidError) as err:
        map_reference_state(stray, model)
    message = str(err.value)
    assert "NL_3.0.extra_gate.weight" in message and "attention_head.weight" in message and "\n" not in message
    missing = {k: v for k, v in state.items() if k not in ("NL_2.1.theta.weight", "bottleneck.running_var")}
    with pytest.raises(VireidError) as err:
        map_reference_state(missing, model)
    message = str(err.value)
    assert "2 of its tensors get no value" in message and "\n" not in message
    assert "neck.bn.running_var" in message and "shared_stages.1.non_local_after_3.theta.weight" in message
